import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { errorFromJsonRpc, Status, statusFromHttp, WacError } from "../src/errors.js";
import { RpcClient } from "../src/rpc.js";
import { FakeClock, settle } from "./fakes.js";

function setup(timeoutMs = 15_000) {
  const clock = new FakeClock();
  const notifications: Array<[string, unknown]> = [];
  const rpc = new RpcClient(clock, (method, params) => notifications.push([method, params]), timeoutMs);
  const sent: any[] = [];
  const link = () => rpc.attach((frame) => sent.push(JSON.parse(frame)));
  return { clock, rpc, sent, notifications, link };
}

async function rejection(promise: Promise<unknown>): Promise<WacError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof WacError, `expected a WacError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection");
}

describe("RpcClient", () => {
  it("matches responses to requests by id, in any order", async () => {
    const { rpc, sent, link } = setup();
    link();
    rpc.setReady();
    const a = rpc.call("PresenceService.GetPresence", { username: "alice" });
    const b = rpc.call("PresenceService.GetPresence", { username: "bob" });
    assert.deepEqual(
      sent.map((r) => [r.jsonrpc, r.method, r.params.username]),
      [
        ["2.0", "PresenceService.GetPresence", "alice"],
        ["2.0", "PresenceService.GetPresence", "bob"],
      ],
    );
    assert.notEqual(sent[0].id, sent[1].id);
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[1].id, result: { username: "bob" } }));
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[0].id, result: { username: "alice" } }));
    assert.deepEqual(await a, { username: "alice" });
    assert.deepEqual(await b, { username: "bob" });
    assert.equal(rpc.size, 0);
  });

  it("takes batches of responses and notifications", async () => {
    const { rpc, sent, link, notifications } = setup();
    link();
    rpc.setReady();
    const a = rpc.call("CallsService.GetIceServers", {});
    rpc.handleFrame(
      JSON.stringify([
        { jsonrpc: "2.0", method: "event", params: { seq: "1" } },
        { jsonrpc: "2.0", id: sent[0].id, result: { iceServers: [] } },
      ]),
    );
    assert.deepEqual(await a, { iceServers: [] });
    assert.deepEqual(notifications, [["event", { seq: "1" }]]);
  });

  it("treats an absent result as an empty message", async () => {
    const { rpc, sent, link } = setup();
    link();
    rpc.setReady();
    const a = rpc.call("IdentityService.Logout", {});
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[0].id, result: null }));
    assert.deepEqual(await a, {});
  });

  it("ignores garbage, unknown ids and server requests", async () => {
    const { rpc, sent, link, notifications } = setup();
    link();
    rpc.setReady();
    const a = rpc.call("CallsService.GetIceServers", {});
    rpc.handleFrame("not json");
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: 999, result: {} }));
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: 5, method: "ping" }));
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error" } }));
    assert.equal(rpc.size, 1);
    assert.deepEqual(notifications, []);
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[0].id, result: {} }));
    await a;
  });

  it("times a request out with DEADLINE_EXCEEDED, and ignores a late answer", async () => {
    const { rpc, sent, link, clock } = setup(15_000);
    link();
    rpc.setReady();
    const a = rpc.call("PresenceService.GetPresence", { username: "alice" });
    const b = rpc.call("PresenceService.GetPresence", { username: "bob" }, { timeoutMs: 1_000 });
    const bError = rejection(b);
    await clock.advance(1_000);
    assert.equal((await bError).status, "DEADLINE_EXCEEDED");
    const aError = rejection(a);
    await clock.advance(13_999);
    assert.equal(rpc.size, 1);
    await clock.advance(1);
    assert.equal((await aError).code, Status.DEADLINE_EXCEEDED);
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[0].id, result: {} }));
    assert.equal(rpc.size, 0);
  });

  it("queues requests until the link is ready, then sends them in order", async () => {
    const { rpc, sent, link } = setup();
    const a = rpc.call("PresenceService.GetPresence", { username: "a" });
    const b = rpc.call("PresenceService.GetPresence", { username: "b" });
    assert.equal(sent.length, 0);
    link();
    const hello = rpc.call("IdentityService.RefreshSession", { refreshToken: "r" }, { immediate: true });
    assert.deepEqual(sent.map((r) => r.method), ["IdentityService.RefreshSession"], "immediate calls skip the queue");
    rpc.setReady();
    assert.deepEqual(sent.map((r) => r.params.username ?? r.params.refreshToken), ["r", "a", "b"]);
    for (const r of sent) rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: r.id, result: {} }));
    await Promise.all([a, b, hello]);
  });

  it("fails an immediate call when no link is open", async () => {
    const { rpc } = setup();
    const error = await rejection(rpc.call("IdentityService.RefreshSession", { refreshToken: "r" }, { immediate: true }));
    assert.equal(error.status, "UNAVAILABLE");
  });

  it("fails requests in flight with UNAVAILABLE when the link drops; queued ones wait", async () => {
    const { rpc, sent, link } = setup();
    link();
    rpc.setReady();
    const inFlight = rpc.call("ContactsService.CreateContact", { contact: { displayName: "x" } });
    const failed = rejection(inFlight);
    rpc.detach("socket closed");
    const queued = rpc.call("PresenceService.GetPresence", { username: "q" });
    const error = await failed;
    assert.equal(error.code, 14);
    assert.equal(error.status, "UNAVAILABLE");
    assert.match(error.message, /socket closed/);
    link();
    rpc.setReady();
    assert.deepEqual(sent.map((r) => r.method), ["ContactsService.CreateContact", "PresenceService.GetPresence"]);
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[1].id, result: { username: "q" } }));
    assert.deepEqual(await queued, { username: "q" });
  });

  it("resends a retryable request once on the next link, ahead of the queue", async () => {
    const { rpc, sent, link } = setup();
    link();
    rpc.setReady();
    const retried = rpc.call("CallsService.HangupCall", { callId: "c1" }, { retryable: true });
    rpc.detach("drop 1");
    const queued = rpc.call("PresenceService.GetPresence", { username: "q" });
    link();
    rpc.setReady();
    assert.deepEqual(sent.map((r) => r.method), [
      "CallsService.HangupCall",
      "CallsService.HangupCall",
      "PresenceService.GetPresence",
    ]);
    assert.equal(sent[0].id, sent[1].id, "the same request, resent");
    rpc.handleFrame(JSON.stringify({ jsonrpc: "2.0", id: sent[2].id, result: {} }));
    await queued;
    const failed = rejection(retried);
    rpc.detach("drop 2");
    assert.equal((await failed).status, "UNAVAILABLE", "a second drop fails it");
  });

  it("fails everything on failAll", async () => {
    const { rpc, link } = setup();
    const queued = rejection(rpc.call("PresenceService.GetPresence", { username: "q" }));
    link();
    const sentOne = rejection(rpc.call("IdentityService.Logout", {}, { immediate: true }));
    rpc.failAll(new WacError(Status.CANCELLED, "bye"));
    assert.equal((await queued).status, "CANCELLED");
    assert.equal((await sentOne).status, "CANCELLED");
    assert.equal(rpc.size, 0);
  });

  it("rejects with the server's error as a WacError", async () => {
    const { rpc, sent, link } = setup();
    link();
    rpc.setReady();
    const a = rejection(rpc.call("ContactsService.GetContact", { contactId: "x" }));
    rpc.handleFrame(
      JSON.stringify({
        jsonrpc: "2.0",
        id: sent[0].id,
        error: { code: 5, message: "contact x not found", data: { status: "NOT_FOUND", resource: "x" } },
      }),
    );
    const error = await a;
    assert.equal(error.code, 5);
    assert.equal(error.status, "NOT_FOUND");
    assert.equal(error.message, "contact x not found");
    assert.deepEqual(error.data, { status: "NOT_FOUND", resource: "x" });
    assert.ok(error.is("NOT_FOUND") && error.is(5));
    await settle();
  });
});

describe("error mapping", () => {
  it("maps gRPC failures by code, preferring data.status", () => {
    assert.equal(errorFromJsonRpc({ code: 16, message: "expired" }).status, "UNAUTHENTICATED");
    assert.equal(errorFromJsonRpc({ code: 11, message: "too old", data: { status: "OUT_OF_RANGE" } }).code, 11);
    assert.equal(errorFromJsonRpc({ code: 2, message: "x", data: { status: "ABORTED" } }).code, Status.ABORTED);
    assert.equal(errorFromJsonRpc({ code: 0, message: "odd" }).status, "OK");
  });

  it("maps JSON-RPC protocol faults to the nearest status, keeping the JSON-RPC code", () => {
    const cases: Array<[number, string]> = [
      [-32700, "INTERNAL"],
      [-32600, "INTERNAL"],
      [-32601, "UNIMPLEMENTED"],
      [-32602, "INVALID_ARGUMENT"],
      [-32603, "INTERNAL"],
      [-32000, "UNKNOWN"],
      [42, "UNKNOWN"],
    ];
    for (const [code, status] of cases) {
      const error = errorFromJsonRpc({ code, message: "m" });
      assert.equal(error.status, status, `${code}`);
      assert.equal(error.jsonRpcCode, code);
      assert.ok(error instanceof Error);
      assert.equal(error.name, "WacError");
    }
  });

  it("maps the edge's rate limit (-32000 with retryAfter) to RESOURCE_EXHAUSTED", () => {
    const error = errorFromJsonRpc({ code: -32000, message: "rate limited", data: { retryAfter: 0.25 } });
    assert.equal(error.status, "RESOURCE_EXHAUSTED");
    assert.equal(error.jsonRpcCode, -32000);
    assert.equal(error.retryAfterMs, 250);
    assert.equal(errorFromJsonRpc({ code: 5, message: "x" }).retryAfterMs, undefined);
  });

  it("maps HTTP statuses for the fallback transport", () => {
    assert.equal(statusFromHttp(401), Status.UNAUTHENTICATED);
    assert.equal(statusFromHttp(403), Status.PERMISSION_DENIED);
    assert.equal(statusFromHttp(404), Status.NOT_FOUND);
    assert.equal(statusFromHttp(429), Status.RESOURCE_EXHAUSTED);
    assert.equal(statusFromHttp(503), Status.UNAVAILABLE);
    assert.equal(statusFromHttp(504), Status.DEADLINE_EXCEEDED);
    assert.equal(statusFromHttp(500), Status.INTERNAL);
    assert.equal(statusFromHttp(418), Status.UNKNOWN);
  });
});
