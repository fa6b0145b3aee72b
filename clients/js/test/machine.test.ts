import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Action, ConnectionMachine, type MachineOptions } from "../src/transport/machine.js";

const noJitter = { initialMs: 500, maxMs: 30_000, multiplier: 2, jitter: 0 };

function machine(options: Partial<MachineOptions> = {}): ConnectionMachine {
  return new ConnectionMachine({ backoff: noJitter, random: () => 0, ...options });
}

const dropped = { code: 1006, reason: "", wasOpen: true };
const refused = { code: 1006, reason: "", wasOpen: false };

function waitOf(actions: Action[]): number | undefined {
  const wait = actions.find((a) => a.type === "wait");
  return wait?.type === "wait" ? wait.ms : undefined;
}

function opened(actions: Action[]): string | undefined {
  const open = actions.find((a) => a.type === "open");
  return open?.type === "open" ? open.kind : undefined;
}

describe("ConnectionMachine", () => {
  it("connects: disconnected → connecting → connected", () => {
    const m = machine();
    assert.equal(m.state, "disconnected");
    assert.deepEqual(m.start(), [
      { type: "state", state: "connecting" },
      { type: "open", kind: "websocket" },
    ]);
    assert.deepEqual(m.start(), [], "start is idempotent");
    assert.deepEqual(m.ready(0), [{ type: "state", state: "connected" }]);
    assert.equal(m.state, "connected");
  });

  it("suspends on a drop and retries when the timer fires", () => {
    const m = machine();
    m.start();
    m.ready(0);
    const actions = m.failed(60_000, dropped);
    assert.deepEqual(actions, [
      { type: "state", state: "suspended" },
      { type: "wait", ms: 500 },
    ]);
    assert.deepEqual(m.timer(), [
      { type: "state", state: "connecting" },
      { type: "open", kind: "websocket" },
    ]);
  });

  it("backs off exponentially while links keep failing, and resets after a stable one", () => {
    const m = machine({ policy: "websocket" });
    m.start();
    const delays: Array<number | undefined> = [];
    for (let i = 0; i < 8; i++) {
      delays.push(waitOf(m.failed(0, refused)));
      m.timer();
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    m.ready(1_000);
    assert.equal(waitOf(m.failed(1_000 + 10_000, dropped)), 500, "a link that lasted resets the backoff");
  });

  it("counts a link that drops right after connecting as a failure", () => {
    const m = machine({ policy: "websocket", stableAfterMs: 10_000 });
    m.start();
    m.ready(0);
    assert.equal(waitOf(m.failed(1_000, dropped)), 500);
    m.timer();
    m.ready(2_000);
    assert.equal(waitOf(m.failed(3_000, dropped)), 1000);
    assert.equal(m.failures, 2);
  });

  it("falls back to HTTP after N WebSocket failures before any success", () => {
    const m = machine({ fallbackAfter: 3 });
    m.start();
    assert.equal(opened(m.timer()), undefined);
    let actions = m.failed(0, refused);
    assert.equal(opened(m.timer()), "websocket");
    actions = m.failed(0, refused);
    assert.equal(opened(m.timer()), "websocket");
    actions = m.failed(0, refused);
    assert.deepEqual(actions[0], { type: "fallback", from: "websocket", to: "http" });
    assert.equal(waitOf(actions), 500, "the first HTTP attempt comes quickly");
    assert.equal(m.kind, "http");
    assert.equal(opened(m.timer()), "http");
    // HTTP failing does not bring WebSocket back.
    m.failed(0, refused);
    assert.equal(opened(m.timer()), "http");
  });

  it("keeps WebSocket when it once worked: the network is down, not blocking it", () => {
    const m = machine({ fallbackAfter: 2 });
    m.start();
    m.ready(0);
    m.failed(60_000, dropped); // stable for a minute: WebSocket is proven
    for (let i = 0; i < 10; i++) {
      m.timer();
      const actions = m.failed(60_000, refused);
      assert.ok(!actions.some((a) => a.type === "fallback"));
    }
    assert.equal(m.kind, "websocket");
  });

  it("counts WebSocket links that open but never last as failures for the fallback", () => {
    const m = machine({ fallbackAfter: 3, stableAfterMs: 10_000 });
    m.start();
    let fellBack = false;
    for (let i = 0; i < 3; i++) {
      m.ready(i * 100);
      fellBack = m.failed(i * 100 + 50, dropped).some((a) => a.type === "fallback");
      m.timer();
    }
    assert.equal(fellBack, true);
    assert.equal(m.kind, "http");
  });

  it("never falls back under the 'websocket' policy, and starts on HTTP under 'http'", () => {
    const ws = machine({ policy: "websocket", fallbackAfter: 1 });
    ws.start();
    for (let i = 0; i < 5; i++) {
      ws.failed(0, refused);
      assert.equal(opened(ws.timer()), "websocket");
    }
    const http = machine({ policy: "http" });
    assert.equal(opened(http.start()), "http");
  });

  it("waits longer after a policy close (1008)", () => {
    const m = machine({ policy: "websocket" });
    m.start();
    m.ready(0);
    assert.equal(waitOf(m.failed(60_000, { code: 1008, reason: "flood", wasOpen: true })), 8000);
  });

  it("reports a lost authentication (4401) and keeps reconnecting", () => {
    const m = machine();
    m.start();
    m.ready(0);
    const actions = m.failed(60_000, { code: 4401, reason: "revoked", wasOpen: true });
    assert.ok(actions.some((a) => a.type === "authLost"));
    assert.equal(m.state, "suspended");
  });

  it("stops from any state, and ignores what happens after", () => {
    const m = machine();
    m.start();
    m.ready(0);
    assert.deepEqual(m.stop(), [
      { type: "cancelWait" },
      { type: "close" },
      { type: "state", state: "disconnected" },
    ]);
    assert.deepEqual(m.failed(1, dropped), []);
    assert.deepEqual(m.timer(), []);
    assert.deepEqual(m.stop(), []);
    m.start();
    m.failed(0, refused);
    assert.equal(m.stop().at(-1)?.type, "state");
    assert.equal(m.state, "disconnected");
  });

  it("wakes from suspended at once, and only from suspended", () => {
    const m = machine();
    assert.deepEqual(m.wake(), []);
    m.start();
    assert.deepEqual(m.wake(), [], "already connecting");
    m.failed(0, refused);
    assert.deepEqual(m.wake(), [
      { type: "cancelWait" },
      { type: "state", state: "connecting" },
      { type: "open", kind: "websocket" },
    ]);
  });
});
