import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newTraceparent as exported, Wac as ExportedWac } from "../src/index.js";
import { Status, WacError } from "../src/errors.js";
import { RpcClient } from "../src/rpc.js";
import { newTraceparent } from "../src/trace.js";
import { type FetchLike, HttpTransport } from "../src/transport/http.js";
import type { TransportContext, TransportKind } from "../src/transport/transport.js";
import { type WebSocketLike, WebSocketTransport } from "../src/transport/websocket.js";
import { Wac, type WacOptions } from "../src/wac.js";
import { FakeClock, settle } from "./fakes.js";

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/;
const PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/** A WebSocket whose frames the test reads; the server's side is `open()`. */
class FakeWebSocket implements WebSocketLike {
  static sockets: FakeWebSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: any[] = [];

  constructor(readonly url: string) {
    FakeWebSocket.sockets.push(this);
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  close(): void {
    this.readyState = 3;
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  reply(id: number, result: unknown): void {
    this.onmessage?.({ data: JSON.stringify({ jsonrpc: "2.0", id, result }) });
  }
}

interface Post {
  url: string;
  method: string;
  body: any;
  respond(body: unknown): void;
}

/**
 * A Wac over the SDK's real transports (one policy only), with a fake
 * WebSocket class and a fake fetch under them: what goes on the wire.
 */
function wire(transport: TransportKind, options: Partial<WacOptions> = {}) {
  const clock = new FakeClock();
  const sockets: FakeWebSocket[] = (FakeWebSocket.sockets = []);
  const fetches: Post[] = [];
  const fetch: FetchLike = (url, init) =>
    new Promise((resolve) => {
      fetches.push({
        url,
        method: init.method,
        body: init.body === undefined ? undefined : JSON.parse(init.body),
        respond: (body) => resolve({ status: 200, ok: true, text: async () => JSON.stringify(body) }),
      });
    });
  const createTransport = (kind: TransportKind, context: TransportContext) =>
    kind === "http"
      ? new HttpTransport(context, { fetch, clock })
      : new WebSocketTransport(context.wsUrl, { WebSocket: FakeWebSocket, clock });
  const wac = new Wac({ url: "https://wac.test", transport, clock, random: () => 0, createTransport, ...options });
  const session = {
    sessionId: "s1",
    accessToken: "a1",
    refreshToken: "r1",
    expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    subscriber: { username: "alice" },
  };
  return { clock, wac, sockets, fetches, session };
}

/** Logs in over a WebSocket and sends one more request: every frame that went out. */
async function overWebSocket(options: Partial<WacOptions>): Promise<any[]> {
  const { wac, sockets, session } = wire("websocket", options);
  const login = wac.login("alice", "secret");
  const socket = sockets[0]!;
  socket.open();
  await settle();
  socket.reply(socket.sent[0].id, session);
  await login;
  await settle();
  wac.request("CallsService.GetIceServers", {}).catch(() => {}); // ends with dispose()
  await settle();
  wac.dispose();
  return socket.sent;
}

/** The same over the HTTP fallback: the bodies POSTed (Subscribe is the GET poll). */
async function overHttp(options: Partial<WacOptions>): Promise<Post[]> {
  const { clock, wac, fetches, session } = wire("http", options);
  const login = wac.login("alice", "secret");
  await clock.advance(0);
  fetches[0]!.respond({ jsonrpc: "2.0", id: fetches[0]!.body.id, result: session });
  await login;
  await settle();
  wac.request("CallsService.GetIceServers", {}).catch(() => {}); // ends with dispose()
  await settle();
  wac.dispose();
  return fetches;
}

describe("traceparent", () => {
  it("newTraceparent makes a fresh W3C traceparent each time", () => {
    const a = newTraceparent();
    const b = newTraceparent();
    assert.match(a, TRACEPARENT);
    assert.match(b, TRACEPARENT);
    assert.notEqual(a, b);
    assert.notEqual(a.slice(3, 35), b.slice(3, 35), "a new trace id, not only a new span id");
    assert.equal(exported, newTraceparent);
    assert.equal(ExportedWac.newTraceparent, newTraceparent, "the UMD's global Wac has it too");
  });

  it("newTraceparent never makes an all-zero id", () => {
    const original = globalThis.crypto.getRandomValues.bind(globalThis.crypto);
    let calls = 0;
    // The first draw of each id is all zeros: it must be drawn again.
    const zeroFirst = <T extends ArrayBufferView | null>(array: T): T => {
      calls += 1;
      return calls % 2 === 1 ? array : original(array as any);
    };
    Object.defineProperty(globalThis.crypto, "getRandomValues", { value: zeroFirst, configurable: true });
    try {
      const value = newTraceparent();
      assert.match(value, TRACEPARENT);
      assert.equal(calls, 4);
      const [, traceId, spanId] = value.split("-");
      assert.notEqual(traceId, "0".repeat(32));
      assert.notEqual(spanId, "0".repeat(16));
    } finally {
      delete (globalThis.crypto as { getRandomValues?: unknown }).getRandomValues; // back to the prototype's
    }
    assert.match(newTraceparent(), TRACEPARENT);
  });

  it("goes on every WebSocket request as the function returns it", async () => {
    const given: string[] = [];
    const sent = await overWebSocket({
      traceparent: () => {
        given.push(newTraceparent());
        return given[given.length - 1];
      },
    });
    assert.deepEqual(sent.map((r) => r.method), ["IdentityService.Login", "EventsService.Subscribe", "CallsService.GetIceServers"]);
    assert.deepEqual(sent.map((r) => r.traceparent), given, "one call per request, its value as is");
    assert.deepEqual(Object.keys(sent[0]), ["jsonrpc", "id", "method", "params", "traceparent"]);
  });

  it("goes on every HTTP fallback request as the function returns it", async () => {
    const posts = await overHttp({ traceparent: () => PARENT });
    const bodies = posts.filter((p) => p.method === "POST").map((p) => p.body);
    assert.deepEqual(bodies.map((r) => r.method), ["IdentityService.Login", "CallsService.GetIceServers"]);
    for (const body of bodies) assert.equal(body.traceparent, PARENT);
    // Subscribe is the long poll, a GET with no request object to carry it.
    assert.equal(posts.filter((p) => p.method === "GET").length, 1);
  });

  it("is absent when the option is unset, or the function returns undefined", async () => {
    for (const options of [{}, { traceparent: () => undefined }, { traceparent: () => "" }]) {
      for (const request of await overWebSocket(options)) {
        assert.deepEqual(Object.keys(request), ["jsonrpc", "id", "method", "params"]);
      }
      for (const post of (await overHttp(options)).filter((p) => p.method === "POST")) {
        assert.deepEqual(Object.keys(post.body), ["jsonrpc", "id", "method", "params"]);
      }
    }
  });

  it("is read when the call is made: a queued request keeps its caller's", async () => {
    const clock = new FakeClock();
    let current: string | undefined = PARENT;
    const rpc = new RpcClient(clock, () => {}, 15_000, () => current);
    const sent: any[] = [];
    void rpc.call("CallsService.GetIceServers", {}).catch(() => {});
    current = undefined;
    void rpc.call("CallsService.GetIceServers", {}).catch(() => {});
    rpc.attach((frame) => sent.push(JSON.parse(frame)));
    rpc.setReady();
    assert.deepEqual(sent.map((r) => r.traceparent), [PARENT, undefined]);
    assert.equal("traceparent" in sent[1], false);
    rpc.failAll(new WacError(Status.CANCELLED, "done"));
  });

  it("a function that throws costs the request its traceparent, not the request", async () => {
    const clock = new FakeClock();
    const rpc = new RpcClient(clock, () => {}, 15_000, () => {
      throw new Error("tracer broke");
    });
    const sent: any[] = [];
    rpc.attach((frame) => sent.push(JSON.parse(frame)));
    rpc.setReady();
    const call = rpc.call("CallsService.GetIceServers", {});
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[0].id, result: { iceServers: [] } }));
    assert.deepEqual(await call, { iceServers: [] });
    assert.equal("traceparent" in sent[0], false);
  });
});
