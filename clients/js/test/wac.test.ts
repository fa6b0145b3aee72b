import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Session } from "../src/gen/wac.js";
import { WacError } from "../src/errors.js";
import { Wac, type WacOptions, endpoints } from "../src/wac.js";
import { FakeClock, FakeNetwork, settle } from "./fakes.js";

const MINUTE = 60_000;

function sessionAt(now: number, n = 1): Session {
  return {
    sessionId: "s1",
    accessToken: `access-${n}`,
    expireTime: new Date(now + 15 * MINUTE).toISOString(),
    refreshToken: `refresh-${n}`,
    refreshExpireTime: new Date(now + 30 * 24 * 60 * MINUTE).toISOString(),
    subscriber: { username: "alice", displayName: "Alice" },
    deviceName: "laptop",
  };
}

class MemoryStore {
  readonly items = new Map<string, string>();
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

function setup(options: Partial<WacOptions> = {}) {
  const clock = new FakeClock();
  const network = new FakeNetwork();
  const wac = new Wac({
    url: "https://wac.test",
    deviceName: "laptop",
    clock,
    random: () => 0,
    createTransport: network.factory,
    ...options,
  });
  const seen: string[] = [];
  for (const name of ["connecting", "connected", "suspended", "disconnected"] as const) wac.on(name, () => seen.push(name));
  return { clock, network, wac, seen };
}

/** Logs alice in over the first link, answering Login and Subscribe. */
async function loggedIn(options: Partial<WacOptions> = {}) {
  const env = setup(options);
  const login = env.wac.login("alice", "secret");
  env.network.current.accept();
  await settle();
  const request = env.network.current.last("IdentityService.Login");
  env.network.current.reply(request.id, sessionAt(env.clock.now()));
  await login;
  await settle();
  env.network.current.reply(env.network.current.last("EventsService.Subscribe").id, {});
  return env;
}

describe("Wac", () => {
  it("derives the WAPI endpoints from the server URL", () => {
    assert.deepEqual(endpoints("https://wac.example.com"), {
      wsUrl: "wss://wac.example.com/wapi",
      httpUrl: "https://wac.example.com/wapi/http",
    });
    assert.deepEqual(endpoints("http://localhost:8080/base/"), {
      wsUrl: "ws://localhost:8080/base/wapi",
      httpUrl: "http://localhost:8080/base/wapi/http",
    });
    assert.equal(endpoints("wss://h/wapi").wsUrl, "wss://h/wapi");
  });

  it("logs in on a fresh link, then subscribes to events", async () => {
    const { wac, network, seen } = setup();
    const sessions: Session[] = [];
    wac.on("session", (s) => sessions.push(s));
    const login = wac.login("alice", "secret");
    assert.equal(network.current.accessToken, undefined, "the login link carries no token");
    network.current.accept();
    await settle();
    const request = network.current.last("IdentityService.Login");
    assert.deepEqual(request.params, { username: "alice", password: "secret", deviceName: "laptop" });
    network.current.reply(request.id, sessionAt(Date.UTC(2030, 0, 1)));
    const session = await login;
    assert.equal(session.accessToken, "access-1");
    assert.equal(wac.session?.subscriber?.username, "alice");
    assert.equal(sessions.length, 1);
    await settle();
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "0" });
    assert.deepEqual(network.current.sent.map((r) => r.method), ["IdentityService.Login", "EventsService.Subscribe"]);
    assert.deepEqual(seen, ["connecting", "connected"]);
  });

  it("rejects a failed login with the server's WacError and disconnects", async () => {
    const { wac, network } = setup();
    const login = wac.login("alice", "wrong").catch((e: unknown) => e);
    network.current.accept();
    await settle();
    network.current.replyError(network.current.last("IdentityService.Login").id, 16, "bad credentials", "UNAUTHENTICATED");
    const error = await login;
    assert.ok(error instanceof WacError);
    assert.equal(error.status, "UNAUTHENTICATED");
    assert.equal(wac.session, null);
    assert.equal(wac.state, "disconnected");
  });

  it("refreshes the session a minute before the access token expires", async () => {
    const { wac, network, clock } = await loggedIn();
    await clock.advance(14 * MINUTE - 1);
    assert.equal(network.current.requests("IdentityService.RefreshSession").length, 0);
    await clock.advance(1);
    const refresh = network.current.last("IdentityService.RefreshSession");
    assert.deepEqual(refresh.params, { refreshToken: "refresh-1" });
    network.current.reply(refresh.id, sessionAt(clock.now(), 2));
    await settle();
    assert.equal(wac.session?.accessToken, "access-2");
    assert.equal(wac.session?.subscriber?.username, "alice", "fields the refresh left out are kept");
    await clock.advance(14 * MINUTE);
    assert.deepEqual(network.current.last("IdentityService.RefreshSession").params, { refreshToken: "refresh-2" });
  });

  it("reconnects with the access token in the URL while it is valid, else refreshes first", async () => {
    const { wac, network, clock } = await loggedIn();
    network.current.event({ seq: "5", presenceChanged: { username: "bob", status: "AWAY" } });
    network.current.fail({ code: 1006, wasOpen: true });
    await clock.advance(500);
    assert.equal(network.current.accessToken, "access-1");
    network.current.accept();
    await settle();
    assert.deepEqual(network.current.sent.map((r) => r.method), ["EventsService.Subscribe"]);
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "5" });
    // Offline past the token's expiry: the next link opens without it and refreshes.
    const expiry = clock.now() + 15 * MINUTE;
    while (clock.now() <= expiry) {
      network.current.fail({ code: 1006, wasOpen: false });
      await clock.advance(30_000); // the backoff's cap: a new attempt each time
    }
    const link = network.current;
    assert.equal(link.accessToken, undefined);
    assert.equal(wac.state, "connecting");
    link.accept();
    await settle();
    assert.deepEqual(link.sent.map((r) => r.method), ["IdentityService.RefreshSession"]);
    link.reply(link.last("IdentityService.RefreshSession").id, sessionAt(clock.now(), 2));
    await settle();
    assert.deepEqual(link.sent.map((r) => r.method), ["IdentityService.RefreshSession", "EventsService.Subscribe"]);
    assert.equal(wac.state, "connected");
    assert.equal(wac.session?.accessToken, "access-2");
  });

  it("after a 4401 close refreshes on the next link; a refused refresh ends the session", async () => {
    const { wac, network, clock, seen } = await loggedIn();
    const ended: string[] = [];
    wac.on("sessionEnded", (info) => ended.push(info.reason));
    network.current.fail({ code: 4401, reason: "unauthenticated", wasOpen: true });
    await clock.advance(500);
    assert.equal(network.current.accessToken, undefined, "the refused token is not presented again");
    network.current.accept();
    await settle();
    const refresh = network.current.last("IdentityService.RefreshSession");
    network.current.replyError(refresh.id, 16, "refresh token revoked", "UNAUTHENTICATED");
    await settle();
    assert.deepEqual(ended, ["refresh_failed"]);
    assert.equal(wac.session, null);
    assert.equal(wac.state, "disconnected");
    assert.equal(seen.at(-1), "disconnected");
  });

  it("emits presence and contact events, and ends the session on sessionRevoked", async () => {
    const { wac, network } = await loggedIn();
    const presence: string[] = [];
    const contacts: string[] = [];
    const ended: string[] = [];
    wac.on("presence", (p) => presence.push(`${p.username}:${p.status}`));
    wac.on("contactChanged", (c) => contacts.push(`${c.contact?.contactId}:${c.deleted ?? false}`));
    wac.on("sessionEnded", (info) => ended.push(info.reason));
    network.current.event({ seq: "1", presenceChanged: { username: "bob", status: "BUSY" } });
    network.current.event({ seq: "1", presenceChanged: { username: "bob", status: "BUSY" } });
    network.current.event({ seq: "2", contactChanged: { contact: { contactId: "c9" }, deleted: true } });
    network.current.event({ seq: "3", sessionRevoked: { sessionId: "s1", reason: "password_changed" } });
    assert.deepEqual(presence, ["bob:BUSY"]);
    assert.deepEqual(contacts, ["c9:true"]);
    assert.deepEqual(ended, ["password_changed"]);
    assert.equal(wac.state, "disconnected");
  });

  it("reads presence in batches and manages contacts", async () => {
    const { wac, network } = await loggedIn();
    const get = wac.presence.get(["bob", "carol"]);
    await settle();
    const batch = network.current.last("PresenceService.BatchGetPresence");
    assert.deepEqual(batch.params, { usernames: ["bob", "carol"] });
    network.current.reply(batch.id, { presences: [{ username: "bob", status: "AVAILABLE" }] });
    assert.deepEqual(await get, [{ username: "bob", status: "AVAILABLE" }]);

    const set = wac.presence.set("DO_NOT_DISTURB", "in a meeting");
    await settle();
    const setRequest = network.current.last("PresenceService.SetPresence");
    assert.deepEqual(setRequest.params, { status: "DO_NOT_DISTURB", note: "in a meeting" });
    network.current.reply(setRequest.id, { username: "alice", status: "DO_NOT_DISTURB" });
    await set;

    const update = wac.contacts.update({ contactId: "c1", favorite: true }, ["favorite"]);
    await settle();
    assert.deepEqual(network.current.last("ContactsService.UpdateContact").params, {
      contact: { contactId: "c1", favorite: true },
      updateMask: "favorite",
    });
    network.current.reply(network.current.last("ContactsService.UpdateContact").id, { contactId: "c1" });
    await update;

    const search = wac.contacts.search("ali", { pageSize: 5 });
    await settle();
    assert.deepEqual(network.current.last("DirectoryService.SearchDirectory").params, { query: "ali", pageSize: 5 });
    network.current.replyError(network.current.last("DirectoryService.SearchDirectory").id, 7, "no directory permission", "PERMISSION_DENIED");
    await assert.rejects(search, (e: WacError) => e.code === 7 && e.status === "PERMISSION_DENIED");
  });

  it("logs out: Logout, then disconnected, and the stored session is removed", async () => {
    const storage = new MemoryStore();
    const { wac, network } = await loggedIn({ storage });
    assert.ok(storage.items.has("wac.session"));
    const ended: string[] = [];
    wac.on("sessionEnded", (info) => ended.push(info.reason));
    const logout = wac.logout();
    await settle();
    network.current.reply(network.current.last("IdentityService.Logout").id, {});
    await logout;
    assert.deepEqual(ended, ["logout"]);
    assert.equal(wac.state, "disconnected");
    assert.equal(storage.items.size, 0);
  });

  it("stores nothing without a storage option, and resumes a stored session", async () => {
    const storage = new MemoryStore();
    const first = await loggedIn({ storage });
    const stored = storage.getItem("wac.session");
    assert.ok(stored);
    first.wac.dispose();

    const { wac, network } = setup({ storage: new MemoryStore() });
    assert.equal(wac.resume(), null);

    const restoredStore = new MemoryStore();
    restoredStore.setItem("wac.session", stored);
    const second = setup({ storage: restoredStore });
    const session = second.wac.resume();
    assert.equal(session?.accessToken, "access-1");
    assert.equal(second.network.current.accessToken, "access-1");
    second.network.current.accept();
    await settle();
    assert.deepEqual(second.network.current.sent.map((r) => r.method), ["EventsService.Subscribe"]);
    void network;
  });

  it("emits resync when the missed events are gone, and subscribes from 0", async () => {
    const { wac, network, clock } = await loggedIn();
    let resyncs = 0;
    wac.on("resync", () => resyncs++);
    network.current.event({ seq: "9" });
    network.current.fail({ code: 1006, wasOpen: true });
    await clock.advance(500);
    network.current.accept();
    await settle();
    const subscribe = network.current.last("EventsService.Subscribe");
    assert.deepEqual(subscribe.params, { afterSeq: "9" });
    network.current.replyError(subscribe.id, 11, "too old", "OUT_OF_RANGE");
    await settle();
    assert.equal(resyncs, 1);
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "0" });
  });

  it("fails requests made before login with FAILED_PRECONDITION", async () => {
    const { wac } = setup();
    await assert.rejects(wac.presence.get(["bob"]), (e: WacError) => e.status === "FAILED_PRECONDITION");
    await assert.rejects(wac.call("bob"), (e: WacError) => e.status === "FAILED_PRECONDITION");
  });
});
