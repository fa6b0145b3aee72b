import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status, WacError } from "../src/errors.js";
import type { MethodName } from "../src/gen/wac.js";
import {
  GoogleLinkApi,
  type LinkEnvironment,
  type LinkPopup,
  MESSAGE_TYPE,
  POPUP_POLL_MS,
  STORAGE_KEY,
  callbackOrigin,
} from "../src/google-link.js";
import type { Requester } from "../src/requester.js";
import { Wac } from "../src/wac.js";
import { FakeClock, FakeNetwork, settle } from "./fakes.js";

const CALLBACK = "https://wac.example.com/oauth2/google/callback";
const ORIGIN = "https://wac.example.com";

class FakePopup implements LinkPopup {
  closed = false;
  location = { href: "" };
  close(): void {
    this.closed = true;
  }
}

class FakeWindow implements LinkEnvironment {
  popup: FakePopup | null = new FakePopup();
  opened: string[] = [];
  listeners = new Set<(origin: string, data: unknown) => void>();
  items = new Map<string, string>();
  storage = {
    getItem: (key: string) => this.items.get(key) ?? null,
    removeItem: (key: string) => void this.items.delete(key),
  };

  open(url: string): LinkPopup | null {
    this.opened.push(url);
    return this.popup;
  }

  onMessage(listener: (origin: string, data: unknown) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  post(origin: string, data: unknown): void {
    for (const listener of [...this.listeners]) listener(origin, data);
  }
}

/** Answers requests from a table; records what was sent. */
function fakeServer(answers: Partial<Record<MethodName, (params: any) => unknown>>) {
  const sent: Array<{ method: string; params: unknown }> = [];
  const request = (async (method: MethodName, params: unknown) => {
    sent.push({ method, params });
    const answer = answers[method];
    if (!answer) throw new Error(`unexpected ${method}`);
    return answer(params);
  }) as Requester;
  return { request, sent };
}

function authorization(clock: FakeClock, state = "s-1") {
  const uri = `https://accounts.google.test/o/oauth2/v2/auth?state=${state}&redirect_uri=${encodeURIComponent(CALLBACK)}`;
  return {
    authorizationUri: uri,
    state,
    expireTime: new Date(clock.now() + 600_000).toISOString(),
  };
}

function setup() {
  const clock = new FakeClock();
  const win = new FakeWindow();
  const server = fakeServer({
    "DirectoryService.CreateGoogleLinkAuthorization": () => authorization(clock),
    "DirectoryService.CompleteGoogleLink": () => ({ username: "alice", state: "LINKED" }),
  });
  const api = new GoogleLinkApi(server.request, clock, () => win);
  return { clock, win, server, api };
}

describe("GoogleLinkApi", () => {
  it("finds the callback's origin in Google's URI", () => {
    assert.equal(callbackOrigin(`https://g.test/auth?redirect_uri=${encodeURIComponent(CALLBACK)}`), ORIGIN);
    assert.equal(callbackOrigin("not a url"), "");
    assert.equal(callbackOrigin(undefined), "");
  });

  it("opens the popup at once, sends it to Google and completes with the callback's code", async () => {
    const { win, server, api } = setup();
    const linked = api.start();
    assert.deepEqual(win.opened, ["about:blank"], "the popup opens before any await");
    await settle();
    assert.match(win.popup!.location.href, /^https:\/\/accounts\.google\.test\//);
    // Messages from elsewhere, or for another authorization, are ignored.
    win.post("https://evil.test", { type: MESSAGE_TYPE, code: "c", state: "s-1" });
    win.post(ORIGIN, { type: MESSAGE_TYPE, code: "c", state: "other" });
    win.post(ORIGIN, { type: "something else" });
    await settle();
    assert.equal(server.sent.length, 1);
    win.post(ORIGIN, { type: MESSAGE_TYPE, code: "the-code", state: "s-1" });
    assert.deepEqual(await linked, { username: "alice", state: "LINKED" });
    assert.deepEqual(server.sent[1], {
      method: "DirectoryService.CompleteGoogleLink",
      params: { code: "the-code", state: "s-1" },
    });
    assert.equal(win.listeners.size, 0);
  });

  it("rejects with CANCELLED when the user declines or closes the popup", async () => {
    const declined = setup();
    const first = declined.api.start();
    await settle();
    declined.win.post(ORIGIN, { type: MESSAGE_TYPE, error: "access_denied", state: "s-1" });
    await assert.rejects(first, (e: WacError) => e.code === Status.CANCELLED && /access_denied/.test(e.message));

    const closed = setup();
    const second = closed.api.start();
    await settle();
    closed.win.popup!.closed = true;
    const cancelled = assert.rejects(second, (e: WacError) => e.code === Status.CANCELLED);
    await closed.clock.advance(POPUP_POLL_MS);
    await cancelled;
    assert.equal(closed.server.sent.length, 1, "nothing to complete");
  });

  it("gives up when the authorization expires", async () => {
    const { clock, win, api } = setup();
    const linked = api.start();
    await settle();
    const expired = assert.rejects(linked, (e: WacError) => e.code === Status.DEADLINE_EXCEEDED);
    await clock.advance(600_000 + POPUP_POLL_MS);
    await expired;
    assert.equal(win.popup!.closed, true);
  });

  it("says so when the popup is blocked", async () => {
    const { win, server, api } = setup();
    win.popup = null;
    await assert.rejects(api.start(), (e: WacError) => e.code === Status.FAILED_PRECONDITION);
    assert.equal(server.sent.length, 0);
  });

  it("completes after a full-tab redirect from what the callback page kept, once", async () => {
    const { win, server, api } = setup();
    assert.equal(await api.completeRedirect(), null);
    win.items.set(STORAGE_KEY, JSON.stringify({ type: MESSAGE_TYPE, code: "c2", state: "s-9" }));
    assert.deepEqual(await api.completeRedirect(), { username: "alice", state: "LINKED" });
    assert.deepEqual(server.sent.at(-1)?.params, { code: "c2", state: "s-9" });
    assert.equal(win.items.size, 0);
    assert.equal(await api.completeRedirect(), null);
  });

  it("reads and removes the link, NOT_FOUND meaning none", async () => {
    const clock = new FakeClock();
    let linked = true;
    const notFound = () => {
      throw new WacError(Status.NOT_FOUND, "you have not linked a Google account");
    };
    const server = fakeServer({
      "DirectoryService.GetGoogleLink": () => (linked ? { username: "alice", state: "BROKEN" } : notFound()),
      "DirectoryService.DeleteGoogleLink": () => (linked ? ((linked = false), {}) : notFound()),
    });
    const api = new GoogleLinkApi(server.request, clock, () => new FakeWindow());
    assert.equal((await api.get())?.state, "BROKEN");
    assert.equal(await api.unlink(), true);
    assert.equal(await api.get(), null);
    assert.equal(await api.unlink(), false);
  });
});

describe("Wac.googleLink", () => {
  it("is wired to the session's requests and its googleLinkChanged events", async () => {
    const clock = new FakeClock();
    const network = new FakeNetwork();
    const wac = new Wac({ url: ORIGIN, clock, random: () => 0, createTransport: network.factory });
    const login = wac.login("alice", "secret");
    network.current.accept();
    await settle();
    network.current.reply(network.current.last("IdentityService.Login").id, {
      sessionId: "s1",
      accessToken: "a",
      expireTime: new Date(clock.now() + 900_000).toISOString(),
      refreshToken: "r",
      subscriber: { username: "alice" },
    });
    await login;
    await settle();
    network.current.reply(network.current.last("EventsService.Subscribe").id, {});

    const changes: string[] = [];
    wac.on("googleLink", (c) => changes.push(`${c.link?.state ?? ""}:${c.deleted ?? false}`));
    network.current.event({ seq: "1", googleLinkChanged: { link: { username: "alice", state: "BROKEN" } } });
    network.current.event({ seq: "2", googleLinkChanged: { link: { username: "alice" }, deleted: true } });
    assert.deepEqual(changes, ["BROKEN:false", ":true"]);

    const got = wac.googleLink.get();
    await settle();
    const request = network.current.last("DirectoryService.GetGoogleLink");
    network.current.replyError(request.id, Status.NOT_FOUND, "you have not linked a Google account", "NOT_FOUND");
    assert.equal(await got, null);
    wac.dispose();
  });
});
