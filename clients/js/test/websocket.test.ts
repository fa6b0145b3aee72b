import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CloseInfo, TransportHandler } from "../src/transport/transport.js";
import { WebSocketTransport, type WebSocketLike } from "../src/transport/websocket.js";
import { FakeClock } from "./fakes.js";

class FakeWebSocket implements WebSocketLike {
  static last: FakeWebSocket | null = null;
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  sent: string[] = [];
  closedWith: [number | undefined, string | undefined] | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.last = this;
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = [code, reason];
    this.readyState = 3;
  }

  // the server's side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(data: unknown): void {
    this.onmessage?.({ data });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

function recorder() {
  const log: string[] = [];
  const closes: CloseInfo[] = [];
  const handler: TransportHandler = {
    onOpen: () => log.push("open"),
    onMessage: (text) => log.push(`message ${text}`),
    onClose: (info) => {
      log.push("close");
      closes.push(info);
    },
  };
  return { log, closes, handler };
}

function transport(clock = new FakeClock()) {
  return new WebSocketTransport("wss://wac.test/wapi?access_token=t", { WebSocket: FakeWebSocket, clock, openTimeoutMs: 1_000 });
}

describe("WebSocketTransport", () => {
  it("opens, carries text frames both ways, and reports the server's close code", () => {
    const { log, closes, handler } = recorder();
    const ws = transport();
    ws.open(handler);
    const socket = FakeWebSocket.last!;
    assert.equal(socket.url, "wss://wac.test/wapi?access_token=t");
    assert.throws(() => ws.send("early"), /not open/);
    socket.open();
    ws.send('{"jsonrpc":"2.0"}');
    assert.deepEqual(socket.sent, ['{"jsonrpc":"2.0"}']);
    socket.receive('{"jsonrpc":"2.0","method":"event"}');
    socket.receive(new ArrayBuffer(2)); // binary frames are not the WAPI's: ignored
    socket.serverClose(4401, "revoked");
    socket.serverClose(1000); // a second close is not reported
    assert.deepEqual(log, ["open", 'message {"jsonrpc":"2.0","method":"event"}', "close"]);
    assert.deepEqual(closes, [{ code: 4401, reason: "revoked", wasOpen: true }]);
  });

  it("fails an attempt that does not open in time", async () => {
    const clock = new FakeClock();
    const { closes, handler } = recorder();
    const ws = transport(clock);
    ws.open(handler);
    const socket = FakeWebSocket.last!;
    await clock.advance(1_000);
    assert.deepEqual(closes, [{ code: 1006, reason: "opening timed out", wasOpen: false }]);
    assert.notEqual(socket.closedWith, null, "the socket is let go");
    socket.open(); // too late: nothing reported
    assert.equal(closes.length, 1);
  });

  it("reports a socket that never opened as not open", () => {
    const { closes, handler } = recorder();
    transport().open(handler);
    FakeWebSocket.last!.serverClose(1006);
    assert.deepEqual(closes, [{ code: 1006, reason: "", wasOpen: false }]);
  });

  it("is silent after close(), which is idempotent", () => {
    const { log, handler } = recorder();
    const ws = transport();
    ws.open(handler);
    const socket = FakeWebSocket.last!;
    socket.open();
    ws.close(1000, "bye");
    ws.close();
    assert.deepEqual(socket.closedWith, [1000, "bye"]);
    socket.receive("late");
    socket.serverClose(1000);
    assert.deepEqual(log, ["open"]);
  });
});
