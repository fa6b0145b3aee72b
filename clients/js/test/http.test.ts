import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HttpTransport, type FetchLike } from "../src/transport/http.js";
import type { CloseInfo, TransportHandler } from "../src/transport/transport.js";
import { FakeClock, settle } from "./fakes.js";

interface Exchange {
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: string;
  respond(status: number, body: unknown): void;
  fail(): void;
  signal: AbortSignal;
}

/** A fetch whose answers the test gives, one exchange at a time. */
function fakeFetch() {
  const exchanges: Exchange[] = [];
  const fetch: FetchLike = (url, init) =>
    new Promise((resolve, reject) => {
      init.signal.addEventListener("abort", () => reject(new Error("aborted")));
      exchanges.push({
        url,
        method: init.method,
        headers: init.headers,
        ...(init.body !== undefined ? { body: init.body } : {}),
        signal: init.signal,
        respond: (status, body) =>
          resolve({
            status,
            ok: status >= 200 && status < 300,
            text: async () => (typeof body === "string" ? body : JSON.stringify(body)),
          }),
        fail: () => reject(new TypeError("Failed to fetch")),
      });
    });
  return { fetch, exchanges };
}

function setup(token: string | undefined = "tok") {
  const clock = new FakeClock();
  const { fetch, exchanges } = fakeFetch();
  const messages: any[] = [];
  const closes: CloseInfo[] = [];
  let opened = false;
  const handler: TransportHandler = {
    onOpen: () => (opened = true),
    onMessage: (text) => messages.push(JSON.parse(text)),
    onClose: (info) => closes.push(info),
  };
  const transport = new HttpTransport(
    { httpUrl: "https://wac.test/wapi/http", accessToken: () => token },
    { fetch, clock, pollTimeoutMs: 40_000 },
  );
  transport.open(handler);
  return { clock, transport, exchanges, messages, closes, isOpen: () => opened };
}

const frame = (id: number, method: string, params: unknown = {}) => JSON.stringify({ jsonrpc: "2.0", id, method, params });

describe("HttpTransport", () => {
  it("opens at once and POSTs each request with the bearer token", async () => {
    const { clock, transport, exchanges, messages, isOpen } = setup();
    await clock.advance(0);
    assert.equal(isOpen(), true);
    transport.send(frame(1, "PresenceService.GetPresence", { username: "bob" }));
    const post = exchanges[0]!;
    assert.equal(post.method, "POST");
    assert.equal(post.url, "https://wac.test/wapi/http");
    assert.equal(post.headers["Authorization"], "Bearer tok");
    assert.equal(post.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(post.body!), { jsonrpc: "2.0", id: 1, method: "PresenceService.GetPresence", params: { username: "bob" } });
    post.respond(200, { jsonrpc: "2.0", id: 1, result: { username: "bob" } });
    await settle();
    assert.deepEqual(messages, [{ jsonrpc: "2.0", id: 1, result: { username: "bob" } }]);
  });

  it("sends Login and RefreshSession without a token", async () => {
    const { transport, exchanges } = setup();
    transport.send(frame(1, "IdentityService.Login", { username: "a", password: "p" }));
    transport.send(frame(2, "IdentityService.RefreshSession", { refreshToken: "r" }));
    assert.equal(exchanges[0]!.headers["Authorization"], undefined);
    assert.equal(exchanges[1]!.headers["Authorization"], undefined);
  });

  it("answers from the HTTP status when the body is not JSON-RPC, and drops on 503", async () => {
    const { transport, exchanges, messages, closes } = setup();
    transport.send(frame(7, "PresenceService.GetPresence", { username: "x" }));
    exchanges[0]!.respond(503, "<html>Service Unavailable</html>");
    await settle();
    assert.deepEqual(messages, [[{ jsonrpc: "2.0", id: 7, error: { code: 14, message: "HTTP 503" } }]]);
    assert.deepEqual(closes, [{ code: 1011, reason: "HTTP 503", wasOpen: true }]);
  });

  it("drops the link with 4401 when a request with a token gets HTTP 401", async () => {
    const { transport, exchanges, messages, closes } = setup();
    transport.send(frame(3, "CallsService.GetIceServers"));
    exchanges[0]!.respond(401, { jsonrpc: "2.0", id: 3, error: { code: 16, message: "token expired", data: { status: "UNAUTHENTICATED" } } });
    await settle();
    assert.equal(messages[0].error.code, 16);
    assert.deepEqual(closes, [{ code: 4401, reason: "HTTP 401", wasOpen: true }]);
  });

  it("drops the link with 1006 when fetch fails at the network level", async () => {
    const { transport, exchanges, closes } = setup();
    transport.send(frame(1, "CallsService.GetIceServers"));
    exchanges[0]!.fail();
    await settle();
    assert.deepEqual(closes, [{ code: 1006, reason: "Failed to fetch", wasOpen: true }]);
  });

  it("serves Subscribe with a long-poll loop: answered after the first poll, then events as notifications", async () => {
    const { transport, exchanges, messages } = setup();
    transport.send(frame(9, "EventsService.Subscribe", { afterSeq: "41" }));
    const first = exchanges[0]!;
    assert.equal(first.method, "GET");
    assert.equal(first.url, "https://wac.test/wapi/http/events?afterSeq=41");
    assert.equal(first.headers["Authorization"], "Bearer tok");
    first.respond(200, { events: [{ seq: "42", presenceChanged: { username: "bob" } }, { seq: "43" }] });
    await settle();
    assert.deepEqual(messages[0], { jsonrpc: "2.0", id: 9, result: {} });
    assert.deepEqual(messages[1], [
      { jsonrpc: "2.0", method: "event", params: { seq: "42", presenceChanged: { username: "bob" } } },
      { jsonrpc: "2.0", method: "event", params: { seq: "43" } },
    ]);
    const second = exchanges[1]!;
    assert.equal(second.url, "https://wac.test/wapi/http/events?afterSeq=43", "the next poll asks after the last event");
    second.respond(200, { events: [] });
    await settle();
    assert.equal(exchanges[2]!.url, "https://wac.test/wapi/http/events?afterSeq=43");
    assert.equal(messages.length, 2);
  });

  it("answers Subscribe with the first poll's error (OUT_OF_RANGE) and stops polling", async () => {
    const { transport, exchanges, messages, closes } = setup();
    transport.send(frame(4, "EventsService.Subscribe", { afterSeq: "5" }));
    exchanges[0]!.respond(400, { error: { code: 11, message: "too old", data: { status: "OUT_OF_RANGE" } } });
    await settle();
    assert.deepEqual(messages, [{ jsonrpc: "2.0", id: 4, error: { code: 11, message: "too old", data: { status: "OUT_OF_RANGE" } } }]);
    assert.equal(exchanges.length, 1);
    assert.deepEqual(closes, []);
  });

  it("drops the link when a later poll fails (4401 on HTTP 401)", async () => {
    const { transport, exchanges, closes } = setup();
    transport.send(frame(4, "EventsService.Subscribe", { afterSeq: "0" }));
    exchanges[0]!.respond(200, { events: [] });
    await settle();
    exchanges[1]!.respond(401, { error: { code: 16, message: "revoked" } });
    await settle();
    assert.deepEqual(closes, [{ code: 4401, reason: "revoked", wasOpen: true }]);
  });

  it("drops the link when a poll is held too long", async () => {
    const { clock, transport, exchanges, closes } = setup();
    transport.send(frame(4, "EventsService.Subscribe", { afterSeq: "0" }));
    await clock.advance(40_000);
    assert.equal(exchanges[0]!.signal.aborted, true);
    assert.deepEqual(closes, [{ code: 1006, reason: "poll timed out", wasOpen: true }]);
  });

  it("restarts the loop on a new Subscribe, and aborts everything on close()", async () => {
    const { transport, exchanges, messages, closes } = setup();
    transport.send(frame(1, "EventsService.Subscribe", { afterSeq: "9" }));
    transport.send(frame(2, "EventsService.Subscribe", { afterSeq: "0" }));
    exchanges[0]!.respond(200, { events: [{ seq: "10" }] }); // the old loop's answer: ignored
    await settle();
    assert.deepEqual(messages, []);
    transport.close();
    await settle();
    assert.equal(exchanges[1]!.signal.aborted, true);
    assert.deepEqual(closes, [], "close() is silent");
    assert.throws(() => transport.send(frame(3, "CallsService.GetIceServers")), /closed/);
  });
});
