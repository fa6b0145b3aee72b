import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status, WacError } from "../src/errors.js";
import type { Event as WacEvent } from "../src/gen/wac.js";
import { Connection, type ConnectionOptions } from "../src/transport/connection.js";
import type { ConnectionState } from "../src/transport/machine.js";
import { FakeClock, FakeNetwork, settle } from "./fakes.js";

function setup(options: Partial<ConnectionOptions> = {}) {
  const clock = new FakeClock();
  const network = new FakeNetwork();
  const connection = new Connection({
    wsUrl: "wss://wac.test/wapi",
    httpUrl: "https://wac.test/wapi/http",
    clock,
    random: () => 0, // the longest delay of each backoff step: ceilings are easy to read
    createTransport: network.factory,
    ...options,
  });
  const states: ConnectionState[] = [];
  const events: WacEvent[] = [];
  let resyncs = 0;
  connection.on("state", (s) => states.push(s));
  connection.on("event", (e) => events.push(e));
  connection.on("resync", () => resyncs++);
  return { clock, network, connection, states, events, resyncs: () => resyncs };
}

/** Opens the current link and lets the (empty) handshake finish. */
async function accept(network: FakeNetwork): Promise<void> {
  network.current.accept();
  await settle();
}

describe("Connection", () => {
  it("connects, subscribes from seq 0 and delivers events", async () => {
    const { network, connection, states, events } = setup();
    connection.start();
    assert.deepEqual(states, ["connecting"]);
    assert.equal(network.current.kind, "websocket");
    connection.subscribeEvents();
    await accept(network);
    assert.deepEqual(states, ["connecting", "connected"]);
    const subscribe = network.current.last("EventsService.Subscribe");
    assert.deepEqual(subscribe.params, { afterSeq: "0" });
    network.current.reply(subscribe.id, {});
    network.current.event({ seq: "1", presenceChanged: { username: "bob", status: "AVAILABLE" } });
    network.current.event({ seq: "2", contactChanged: { contact: { contactId: "c1" } } });
    assert.deepEqual(events.map((e) => e.seq), ["1", "2"]);
  });

  it("reconnects after a drop with backoff, resubscribing after the last seq and dropping duplicates", async () => {
    const { clock, network, connection, states, events } = setup();
    connection.subscribeEvents();
    connection.start();
    await accept(network);
    const first = network.current;
    first.event({ seq: "41" });
    first.event({ seq: "42" });
    first.fail({ code: 1006, wasOpen: true });
    assert.equal(connection.state, "suspended");
    assert.deepEqual(clock.pending(), [500]);
    await clock.advance(499);
    assert.equal(network.links.length, 1, "not before the backoff delay");
    await clock.advance(1);
    assert.equal(network.links.length, 2);
    await accept(network);
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "42" });
    // The server replays from 43; an overlap is dropped.
    network.current.event({ seq: "42" });
    network.current.event({ seq: "43" });
    network.current.event({ seq: "43" });
    network.current.event({ seq: "44" });
    assert.deepEqual(events.map((e) => e.seq), ["41", "42", "43", "44"]);
    assert.deepEqual(states, ["connecting", "connected", "suspended", "connecting", "connected"]);
  });

  it("emits resync on OUT_OF_RANGE and subscribes again from 0", async () => {
    const { network, connection, resyncs, events } = setup();
    connection.subscribeEvents();
    connection.start();
    await accept(network);
    network.current.event({ seq: "7" });
    network.current.fail({ code: 1001, wasOpen: true });
    connection.wake();
    await accept(network);
    const subscribe = network.current.last("EventsService.Subscribe");
    assert.deepEqual(subscribe.params, { afterSeq: "7" });
    network.current.replyError(subscribe.id, 11, "events after 7 are gone", "OUT_OF_RANGE");
    await settle();
    assert.equal(resyncs(), 1);
    const again = network.current.last("EventsService.Subscribe");
    assert.notEqual(again.id, subscribe.id);
    assert.deepEqual(again.params, { afterSeq: "0" });
    network.current.reply(again.id, {});
    network.current.event({ seq: "3" }); // after a resync any seq is new
    assert.deepEqual(events.map((e) => e.seq), ["7", "3"]);
  });

  it("subscribes again with backoff when the server answers UNAVAILABLE or DEADLINE_EXCEEDED on a live link", async () => {
    const { clock, network, connection, events } = setup();
    const errors: WacError[] = [];
    connection.on("error", (e) => errors.push(e));
    connection.subscribeEvents();
    connection.start();
    await accept(network);
    network.current.event({ seq: "5" });
    const link = network.current;
    const first = link.last("EventsService.Subscribe");
    link.replyError(first.id, 14, "the session cannot be checked right now; retry shortly", "UNAVAILABLE");
    await settle();
    assert.equal(link.requests("EventsService.Subscribe").length, 1, "not at once");
    await clock.advance(499);
    assert.equal(link.requests("EventsService.Subscribe").length, 1);
    await clock.advance(1);
    const second = link.last("EventsService.Subscribe");
    assert.notEqual(second.id, first.id);
    assert.deepEqual(second.params, { afterSeq: "5" }, "after the last seq seen");
    link.replyError(second.id, 4, "the wac core did not answer within 10 s", "DEADLINE_EXCEEDED");
    await settle();
    await clock.advance(999);
    assert.equal(link.requests("EventsService.Subscribe").length, 2, "the backoff grows");
    await clock.advance(1);
    const third = link.last("EventsService.Subscribe");
    link.reply(third.id, {});
    link.event({ seq: "6" });
    assert.deepEqual(events.map((e) => e.seq), ["5", "6"]);
    assert.deepEqual(errors, [], "retried, not reported");
    assert.equal(network.current, link, "on the same link");
  });

  it("does not resubscribe on a link that dropped meanwhile", async () => {
    const { clock, network, connection } = setup();
    connection.subscribeEvents();
    connection.start();
    await accept(network);
    const link = network.current;
    link.replyError(link.last("EventsService.Subscribe").id, 14, "busy", "UNAVAILABLE");
    await settle();
    link.fail({ code: 1006, wasOpen: true });
    await clock.advance(60_000);
    assert.equal(link.requests("EventsService.Subscribe").length, 1, "the old link is left alone");
  });

  it("sends the handshake first, then Subscribe, then the requests that queued", async () => {
    const { network, connection } = setup();
    connection.handshake = async () => {
      await connection.rpc.call("IdentityService.RefreshSession", { refreshToken: "r1" }, { immediate: true });
    };
    connection.subscribeEvents();
    const queued = connection.rpc.call("PresenceService.GetPresence", { username: "bob" });
    connection.start();
    network.current.accept();
    await settle();
    assert.deepEqual(network.current.sent.map((r) => r.method), ["IdentityService.RefreshSession"]);
    assert.equal(connection.state, "connecting", "not connected until the handshake is done");
    network.current.reply(network.current.last("IdentityService.RefreshSession").id, { accessToken: "t" });
    await settle();
    assert.deepEqual(network.current.sent.map((r) => r.method), [
      "IdentityService.RefreshSession",
      "EventsService.Subscribe",
      "PresenceService.GetPresence",
    ]);
    assert.equal(connection.state, "connected");
    network.current.reply(network.current.last("PresenceService.GetPresence").id, { username: "bob" });
    assert.deepEqual(await queued, { username: "bob" });
  });

  it("fails a link whose handshake fails, and retries", async () => {
    const { clock, network, connection } = setup();
    let attempts = 0;
    connection.handshake = async () => {
      attempts++;
      if (attempts === 1) throw new WacError(Status.INTERNAL, "boom");
    };
    connection.start();
    await accept(network);
    assert.equal(connection.state, "suspended");
    assert.equal(network.links[0]!.closed, true);
    await clock.advance(500);
    await accept(network);
    assert.equal(connection.state, "connected");
    assert.equal(attempts, 2);
  });

  it("reports authLost when the server closes with 4401", async () => {
    const { network, connection } = setup();
    let lost = 0;
    connection.on("authLost", () => lost++);
    connection.start();
    await accept(network);
    network.current.fail({ code: 4401, reason: "revoked", wasOpen: true });
    assert.equal(lost, 1);
    assert.equal(connection.state, "suspended");
  });

  it("fails requests in flight on a drop, resends retryable ones on the new link", async () => {
    const { network, connection } = setup();
    connection.start();
    await accept(network);
    const plain = connection.rpc.call("ContactsService.CreateContact", { contact: { displayName: "A" } });
    const retryable = connection.rpc.call("CallsService.HangupCall", { callId: "c" }, { retryable: true });
    const plainFailure = plain.catch((e: WacError) => e);
    network.current.fail({ code: 1006, wasOpen: true });
    const error = await plainFailure;
    assert.ok(error instanceof WacError);
    assert.equal(error.code, 14);
    connection.wake();
    await accept(network);
    const resent = network.current.last("CallsService.HangupCall");
    network.current.reply(resent.id, { callId: "c", state: "ENDED" });
    assert.deepEqual(await retryable, { callId: "c", state: "ENDED" });
  });

  it("times out requests while suspended, counting queue time", async () => {
    const { clock, network, connection } = setup({ requestTimeoutMs: 2_000, transport: "websocket" });
    connection.start();
    network.current.fail();
    const request = connection.rpc.call("PresenceService.GetPresence", { username: "x" }).catch((e: WacError) => e);
    await clock.advance(2_000);
    const error = await request;
    assert.ok(error instanceof WacError);
    assert.equal(error.status, "DEADLINE_EXCEEDED");
  });

  it("falls back to HTTP after three WebSocket failures, then subscribes over it", async () => {
    const { clock, network, connection, states } = setup();
    const fallbacks: string[] = [];
    connection.on("fallback", (kind) => fallbacks.push(kind));
    connection.subscribeEvents();
    connection.start();
    for (let i = 0; i < 3; i++) {
      assert.equal(network.current.kind, "websocket");
      network.current.fail({ code: 1006, wasOpen: false });
      await clock.advance(clock.pending()[0] ?? 0);
    }
    assert.deepEqual(fallbacks, ["http"]);
    assert.equal(network.current.kind, "http");
    assert.equal(connection.transportKind, "http");
    await accept(network);
    assert.equal(connection.state, "connected");
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "0" });
    assert.deepEqual(states.slice(0, 3), ["connecting", "suspended", "connecting"]);
  });

  it("passes the access token to each new transport", async () => {
    const { network, connection } = setup();
    let token: string | undefined = "t1";
    connection.accessToken = () => token;
    connection.start();
    assert.equal(network.current.accessToken, "t1");
    await accept(network);
    token = undefined;
    network.current.fail({ wasOpen: true });
    connection.wake();
    assert.equal(network.current.accessToken, undefined);
  });

  it("stops: closes the link, fails pending requests, ignores the old link", async () => {
    const { network, connection, states } = setup();
    connection.start();
    await accept(network);
    const link = network.current;
    const pending = connection.rpc.call("PresenceService.GetPresence", { username: "x" }).catch((e: WacError) => e);
    connection.stop();
    assert.equal(link.closed, true);
    assert.equal((await pending as WacError).status, "CANCELLED");
    assert.equal(states.at(-1), "disconnected");
    link.event({ seq: "1" }); // nothing reaches a stopped connection
    assert.equal(connection.state, "disconnected");
  });

  it("drop() simulates a lost network and reconnects", async () => {
    const { network, connection } = setup();
    connection.start();
    await accept(network);
    connection.drop("offline");
    assert.equal(connection.state, "suspended");
    assert.equal(network.links[0]!.closed, true);
    connection.wake();
    assert.equal(network.links.length, 2);
  });
});
