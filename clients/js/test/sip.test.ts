import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import type { Call } from "../src/calls/call.js";
import { Status, type WacError } from "../src/errors.js";
import type { Session } from "../src/gen/wac.js";
import { endFromSip, endFromStatus } from "../src/sip/reasons.js";
import { e164, routeOf, sipUri } from "../src/sip/target.js";
import { Wac, type WacOptions, announcedGateway } from "../src/wac.js";
import { FakeSipUa, type FakeSipSession } from "./fake-jssip.js";
import { FakePeerConnection, FakeStream, type FakeTrack } from "./fake-webrtc.js";
import { FakeClock, FakeNetwork, settle } from "./fakes.js";
import { loggedIn as loggedInOn } from "./logged-in.js";

const GATEWAY = { url: "wss://wac.test/sip", domain: "example.test" };
const ICE = { iceServers: [{ urls: ["stun:stun.test"] }], ttl: "3600s" };
const ANSWER_SDP = "v=0 remote answer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendrecv\r\n";
const HOLD_SDP = "v=0 hold\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendonly\r\n";

/** alice logged in, with a gateway and the fake JsSIP unless ``options`` say otherwise. */
function loggedIn(options: Partial<WacOptions> = {}, lifetimeMs?: number, announced?: Partial<Session>) {
  return loggedInOn({ gateway: GATEWAY, createSipUa: FakeSipUa.factory, ...options }, lifetimeMs, announced);
}

/** Everything a Call tells its application, in order: the API both stacks must keep alike. */
function record(call: Call): string[] {
  const seen: string[] = [];
  call.on("state", (s) => seen.push(`state:${s}`));
  call.on("remoteStream", () => seen.push("remoteStream"));
  call.on("remoteHold", (h) => seen.push(`remoteHold:${h}`));
  call.on("ended", (e) => seen.push(`ended:${e.reason}:${e.endedBy ?? ""}`));
  return seen;
}

function lastPc(): FakePeerConnection {
  const pc = FakePeerConnection.instances.at(-1);
  assert.ok(pc, "a peer connection was made");
  return pc;
}

async function sipCall(wac: Wac, server: Awaited<ReturnType<typeof loggedIn>>["server"], target: string, options = {}) {
  const placing = wac.call(target, options);
  await server.answer("CallsService.GetIceServers", ICE);
  const call = await placing;
  const placed = FakeSipUa.last.calls.at(-1);
  assert.ok(placed, "an INVITE was sent");
  return { call, session: placed.session, target: placed.target, options: placed.options };
}

describe("sip: routing by target", () => {
  it("sends numbers, tel: and sip: URIs to the gateway, usernames to the WAPI", () => {
    assert.equal(routeOf("bob"), "wapi");
    assert.equal(routeOf("bob.smith"), "wapi");
    assert.equal(routeOf("+34600111222"), "sip");
    assert.equal(routeOf("+34 600 11-12-22"), "sip");
    assert.equal(routeOf("tel:+34600111222"), "sip");
    assert.equal(routeOf("TEL:112"), "sip");
    assert.equal(routeOf("sip:carol@other.test"), "sip");
    assert.equal(routeOf("sips:carol@other.test"), "sip");
    assert.equal(routeOf("+"), "wapi", "a lone plus is no number");
    assert.equal(routeOf("+0123"), "wapi", "no country code starts with 0");
    assert.equal(routeOf("+1234567890123456"), "wapi", "E.164 has at most 15 digits");
    assert.equal(routeOf("+34600111222", "wapi"), "wapi");
    assert.equal(routeOf("bob", "sip"), "sip");
    assert.equal(e164(" +34 (600) 111.222 "), "+34600111222");
  });

  it("makes the request URI: numbers with user=phone, sip: URIs as they are, names in the domain", () => {
    const d = "example.test";
    assert.equal(sipUri("+34 600 111 222", d), "sip:+34600111222@example.test;user=phone");
    assert.equal(sipUri("tel:+34-600-111-222", d), "sip:+34600111222@example.test;user=phone");
    assert.equal(sipUri("tel:112;phone-context=+34", d), "sip:112@example.test;user=phone");
    assert.equal(sipUri("sip:carol@other.test", d), "sip:carol@other.test");
    assert.equal(sipUri("sips:carol@other.test;transport=ws", d), "sips:carol@other.test;transport=ws");
    assert.equal(sipUri("bob", d), "sip:bob@example.test");
    assert.equal(sipUri("tel:", d), null);
    assert.equal(sipUri("tel:+", d), null);
    assert.equal(sipUri("sip:two words@x", d), null);
    assert.equal(sipUri("http://x", d), null);
  });
});

describe("sip: end reasons", () => {
  it("maps final statuses to the Call API's reasons, and says more in the error's status", () => {
    const table: Array<[number, string, number | undefined]> = [
      [486, "BUSY", undefined],
      [600, "BUSY", undefined],
      [603, "REJECTED", undefined],
      [404, "UNAVAILABLE", Status.NOT_FOUND],
      [604, "UNAVAILABLE", Status.NOT_FOUND],
      [403, "FAILED", Status.PERMISSION_DENIED],
      [401, "FAILED", Status.UNAUTHENTICATED],
      [480, "UNAVAILABLE", undefined],
      [503, "UNAVAILABLE", undefined],
      [408, "NO_ANSWER", undefined],
      [487, "NO_ANSWER", undefined],
      [500, "FAILED", undefined],
      [488, "FAILED", undefined],
    ];
    for (const [status, reason, errorStatus] of table) {
      assert.deepEqual(endFromStatus(status), errorStatus === undefined ? { reason } : { reason, errorStatus }, `status ${status}`);
    }
    assert.equal(endFromStatus(200), null);
    assert.equal(endFromStatus(180), null);
  });

  it("maps JsSIP's causes when no response ended the call", () => {
    assert.equal(endFromSip({ originator: "remote", cause: "Terminated" }).reason, "COMPLETED");
    assert.equal(endFromSip({ originator: "local", cause: "Terminated" }).reason, "COMPLETED");
    assert.equal(endFromSip({ originator: "local", cause: "Canceled" }).reason, "CANCELLED");
    assert.equal(endFromSip({ originator: "remote", cause: "Canceled" }).reason, "CANCELLED");
    assert.equal(endFromSip({ originator: "remote", cause: "Canceled", reasonHeader: 'SIP;cause=200;text="Call completed elsewhere"' }).reason, "ANSWERED_ELSEWHERE");
    assert.equal(endFromSip({ originator: "system", cause: "Connection Error" }).reason, "FAILED");
    assert.equal(endFromSip({ originator: "system", cause: "No Answer" }).reason, "NO_ANSWER");
    assert.equal(endFromSip({ originator: "system", cause: "RTP Timeout" }).reason, "FAILED");
    // A status counts only when the other side sent it.
    assert.equal(endFromSip({ originator: "remote", cause: "Busy", status: 486 }).reason, "BUSY");
    assert.equal(endFromSip({ originator: "local", cause: "Rejected", status: 486 }).reason, "REJECTED");
  });
});

describe("sip: registration", () => {
  beforeEach(() => {
    FakeSipUa.instances.length = 0;
    FakePeerConnection.instances.length = 0;
  });

  it("registers after login as sip:<username>@<domain> with the access token as the bearer", async () => {
    const { wac, registrations } = await loggedIn();
    const ua = FakeSipUa.last;
    assert.equal(FakeSipUa.instances.length, 1);
    assert.deepEqual(ua.config, {
      url: "wss://wac.test/sip",
      uri: "sip:alice@example.test",
      authorization: "Bearer a1",
      registerExpires: 600,
    });
    assert.deepEqual(ua.log, [["start"]]);
    assert.deepEqual(wac.sipRegistration, { state: "registering" });
    ua.emit("registered", { response: { status_code: 200 } });
    ua.emit("registrationFailed", { cause: "Authentication Error", response: { status_code: 401 } });
    assert.deepEqual(registrations, [
      { state: "registering" },
      { state: "registered" },
      { state: "failed", reason: "Authentication Error", status: 401 },
    ]);
    assert.deepEqual(wac.sipRegistration, { state: "failed", reason: "Authentication Error", status: 401 });
  });

  it("registers at the gateway the login announces, on the WAPI URL's scheme and host", async () => {
    const sipGateway = { path: "/sip", domain: "sip.example.test" };
    const { wac, server } = await loggedIn({ gateway: undefined, url: "https://wac.test:8443/app" }, undefined, {
      sipGateway,
    });
    assert.equal(FakeSipUa.instances.length, 1);
    assert.deepEqual(FakeSipUa.last.config, {
      url: "wss://wac.test:8443/sip",
      uri: "sip:alice@sip.example.test",
      authorization: "Bearer a1",
      registerExpires: 600,
    });
    assert.deepEqual(FakeSipUa.last.log, [["start"]]);
    assert.deepEqual(wac.sipRegistration, { state: "registering" });
    const out = wac.logout();
    await server.answer("IdentityService.Logout");
    await out;
    assert.deepEqual(FakeSipUa.last.log, [["start"], ["stop"]]);
    assert.equal(wac.sipRegistration, null, "the next login learns the gateway again");
  });

  it("registers at the announced url when there is one, over plain ws for an http WAPI", async () => {
    const sipGateway = { path: "/sip", domain: "example.test", url: "wss://sip.example.test/ws" };
    await loggedIn({ gateway: undefined }, undefined, { sipGateway });
    assert.equal(FakeSipUa.last.config.url, "wss://sip.example.test/ws");
    assert.equal(
      announcedGateway({ path: "/sip", domain: "example.test" }, "ws://127.0.0.1:8080/wapi")?.url,
      "ws://127.0.0.1:8080/sip",
    );
    assert.equal(announcedGateway({ path: "/sip" }, "ws://127.0.0.1:8080/wapi"), null, "no domain, no gateway");
  });

  it("prefers the gateway option to the announced one", async () => {
    await loggedIn({}, undefined, { sipGateway: { path: "/other", domain: "announced.test" } });
    assert.equal(FakeSipUa.instances.length, 1);
    assert.equal(FakeSipUa.last.config.url, "wss://wac.test/sip");
    assert.equal(FakeSipUa.last.config.uri, "sip:alice@example.test");
  });

  it("has no registration without the gateway option", async () => {
    const { wac } = await loggedIn({ gateway: undefined });
    assert.equal(FakeSipUa.instances.length, 0);
    assert.equal(wac.sipRegistration, null);
  });

  it("re-REGISTERs with the token in place, and hands the refreshed token on to every later request", async () => {
    const { clock, server, wac } = await loggedIn();
    const ua = FakeSipUa.last;
    ua.emit("registered");
    ua.emit("registrationExpiring");
    await settle();
    assert.deepEqual(ua.log.slice(1), [["set", "authorization_jwt", "Bearer a1"], ["register", "Bearer a1"]]);
    assert.equal(server.link.requests("IdentityService.RefreshSession").length, 0, "a usable token is not refreshed");

    await clock.advance(14 * 60_000); // a minute before expiry, the session refreshes
    await server.answer("IdentityService.RefreshSession", {
      sessionId: "s1",
      accessToken: "a2",
      refreshToken: "r2",
      expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    });
    assert.equal(wac.session?.accessToken, "a2");
    assert.deepEqual(ua.log.at(-1), ["set", "authorization_jwt", "Bearer a2"]);
    assert.equal(ua.authorization, "Bearer a2");
    assert.equal(FakeSipUa.instances.length, 1, "the same registration goes on");
  });

  it("refreshes a token about to expire before the re-REGISTER, and registers with the fresh one", async () => {
    const { clock, server } = await loggedIn({ requestTimeoutMs: 3_600_000 }, 65_000);
    const ua = FakeSipUa.last;
    ua.emit("registered");
    await clock.advance(5_000); // the session's own refresh is sent; its answer is slow
    assert.equal(server.link.requests("IdentityService.RefreshSession").length, 1);
    await clock.advance(55_000); // 5 s left: too little to present
    ua.emit("registrationExpiring");
    await settle();
    assert.deepEqual(ua.log, [["start"]], "the re-REGISTER waits for the fresh token");
    assert.equal(server.link.requests("IdentityService.RefreshSession").length, 1, "one refresh at a time");
    server.link.reply(server.link.last("IdentityService.RefreshSession").id, {
      sessionId: "s1",
      accessToken: "a2",
      refreshToken: "r2",
      expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    });
    await settle();
    const registers = ua.log.filter(([what]) => what === "register");
    assert.deepEqual(registers, [["register", "Bearer a2"]]);
  });

  it("tries again with the refreshed token a registration refused for its token (401)", async () => {
    const { clock, server } = await loggedIn();
    const ua = FakeSipUa.last;
    ua.emit("registrationFailed", { cause: "Authentication Error", response: { status_code: 401 } });
    await clock.advance(14 * 60_000);
    await server.answer("IdentityService.RefreshSession", {
      sessionId: "s1",
      accessToken: "a2",
      refreshToken: "r2",
      expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    });
    assert.deepEqual(ua.log.slice(-2), [["set", "authorization_jwt", "Bearer a2"], ["register", "Bearer a2"]]);
  });

  it("a resumed session whose access token expired registers only with the token its refresh brings", async () => {
    const clock = new FakeClock();
    const network = new FakeNetwork();
    const wac = new Wac({ url: "https://wac.test", clock, random: () => 0, createTransport: network.factory, gateway: GATEWAY, createSipUa: FakeSipUa.factory });
    wac.resume({
      sessionId: "s1",
      accessToken: "stale",
      refreshToken: "r1",
      expireTime: new Date(clock.now() - 1_000).toISOString(),
      refreshExpireTime: new Date(clock.now() + 3_600_000).toISOString(),
      subscriber: { username: "alice" },
    });
    network.current.accept();
    await settle();
    assert.equal(FakeSipUa.instances.length, 0, "no REGISTER with an expired token");
    const refresh = network.current.last("IdentityService.RefreshSession");
    network.current.reply(refresh.id, {
      sessionId: "s1",
      accessToken: "a2",
      refreshToken: "r2",
      expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    });
    await settle();
    assert.equal(FakeSipUa.instances.length, 1);
    assert.equal(FakeSipUa.last.config.authorization, "Bearer a2");
    wac.dispose();
    assert.deepEqual(FakeSipUa.last.log.at(-1), ["stop"]);
  });

  it("unregisters at logout", async () => {
    const { wac, server, registrations } = await loggedIn();
    const ua = FakeSipUa.last;
    ua.emit("registered");
    const out = wac.logout();
    await server.answer("IdentityService.Logout", {});
    await out;
    assert.deepEqual(ua.log.at(-1), ["stop"]);
    assert.deepEqual(registrations.at(-1), { state: "unregistered", reason: "stopped" });
    assert.deepEqual(wac.sipRegistration, { state: "unregistered", reason: "stopped" });
  });
});

describe("sip: calls", () => {
  beforeEach(() => {
    FakeSipUa.instances.length = 0;
    FakePeerConnection.instances.length = 0;
  });

  it("routes wac.call() by target, and `via` forces a stack", async () => {
    const { wac, server } = await loggedIn();
    const ua = FakeSipUa.last;
    for (const [target, uri] of [
      ["+34 600 111 222", "sip:+34600111222@example.test;user=phone"],
      ["tel:+34600111222", "sip:+34600111222@example.test;user=phone"],
      ["sip:carol@other.test", "sip:carol@other.test"],
    ] as const) {
      const { call } = await sipCall(wac, server, target);
      assert.equal(ua.calls.at(-1)?.target, uri, target);
      assert.equal(call.via, "sip");
      assert.equal(call.peer, target);
      await call.hangup();
    }
    const forced = await sipCall(wac, server, "bob", { via: "sip" });
    assert.equal(forced.target, "sip:bob@example.test");
    await forced.call.hangup();

    const placing = wac.call("+34600111222", { via: "wapi" });
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.CreateCall", { callId: "c1", state: "RINGING" });
    const overWapi = await placing;
    assert.equal(overWapi.via, "wapi");
    assert.equal(server.link.last("CallsService.CreateCall").params.callee, "+34600111222");
    assert.equal(ua.calls.length, 4, "no INVITE for it");

    const byName = wac.call("bob");
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.CreateCall", { callId: "c2", state: "RINGING" });
    assert.equal((await byName).via, "wapi");
    assert.equal(server.link.last("CallsService.CreateCall").params.callee, "bob");

    await assert.rejects(wac.call("tel:", {}), (e: WacError) => e.code === Status.INVALID_ARGUMENT);
  });

  it("without a gateway, numbers go over the WAPI, and via sip is refused", async () => {
    const { wac, server } = await loggedIn({ gateway: undefined });
    const placing = wac.call("+34600111222");
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.CreateCall", { callId: "c1", state: "ENDED", endReason: "UNAVAILABLE", endedBy: "wac" });
    assert.equal((await placing).ended?.reason, "UNAVAILABLE");
    await assert.rejects(wac.call("+34600111222", { via: "sip" }), (e: WacError) => e.code === Status.FAILED_PRECONDITION);
  });

  it("gives JsSIP the SDK's media and ICE servers, and surfaces its peer connection and streams", async () => {
    const { wac, server, mediaRequests } = await loggedIn();
    const { call, options } = await sipCall(wac, server, "+34600111222", { audio: true, video: false });
    assert.deepEqual(mediaRequests, [{ audio: true, video: false }]);
    assert.deepEqual(options.pcConfig, { iceServers: [{ urls: ["stun:stun.test"] }] });
    assert.equal(options.mediaStream, call.localStream);
    assert.deepEqual(options.mediaConstraints, { audio: true, video: false });
    const pc = lastPc();
    assert.deepEqual(pc.configuration, { iceServers: [{ urls: ["stun:stun.test"] }] });
    assert.equal(call.peerConnection, pc as unknown as RTCPeerConnection);
    const stream = new FakeStream();
    pc.remoteTrack("audio", stream);
    assert.equal(call.remoteStream, stream as unknown as MediaStream);
    assert.equal(call.state, "calling");
    assert.deepEqual(wac.activeCalls, [call]);
  });

  it("raises the same Call events for both stacks: ringing, answered, remote stream, remote hold, ended by the peer", async () => {
    const { wac, server } = await loggedIn();
    // Over the WAPI.
    const placing = wac.call("bob");
    await server.answer("CallsService.GetIceServers", ICE);
    const create = server.link.last("CallsService.CreateCall");
    server.link.reply(create.id, { callId: "c1", state: "RINGING", caller: "alice", callee: "bob" });
    const wapiCall = await placing;
    const wapiSeen = record(wapiCall);
    server.event({ callRinging: { call: { callId: "c1", state: "RINGING" } } });
    server.event({ callAnswered: { call: { callId: "c1", state: "ACTIVE" }, answer: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await settle();
    lastPc().remoteTrack("audio", new FakeStream());
    server.event({ callUpdated: { call: { callId: "c1" }, description: { type: "OFFER", sdp: HOLD_SDP } } });
    await settle();
    server.event({ callEnded: { call: { callId: "c1", state: "ENDED", endReason: "COMPLETED", endedBy: "bob" }, reason: "COMPLETED" } });
    await settle();

    // Over the gateway.
    const { call: sipCallObject, session } = await sipCall(wac, server, "sip:bob@example.test");
    const sipSeen = record(sipCallObject);
    session.ring();
    session.accept();
    lastPc().remoteTrack("audio", new FakeStream());
    session.remoteHold(true);
    session.bye();
    await settle();

    assert.deepEqual(wapiSeen, ["state:ringing", "state:active", "remoteStream", "remoteHold:true", "state:ended", "ended:COMPLETED:bob"]);
    assert.deepEqual(sipSeen, wapiSeen.map((e) => e.replace(":bob", ":sip:bob@example.test")));
    assert.equal(sipCallObject.info.state, "ENDED");
    assert.equal(sipCallObject.info.endReason, "COMPLETED");
    assert.ok(sipCallObject.info.answerTime);
    assert.equal(lastPc().closed, true);
    assert.deepEqual(wac.activeCalls, []);
  });

  it("ends a refused call with the reason of its status, the status, and an error where the reason says less", async () => {
    const { wac, server } = await loggedIn();
    const cases: Array<[number, string, string, string | undefined]> = [
      [486, "Busy", "BUSY", undefined],
      [603, "Rejected", "REJECTED", undefined],
      [404, "Not Found", "UNAVAILABLE", "NOT_FOUND"],
      [403, "Rejected", "FAILED", "PERMISSION_DENIED"],
      [480, "Unavailable", "UNAVAILABLE", undefined],
      [408, "Request Timeout", "NO_ANSWER", undefined],
    ];
    for (const [status, cause, reason, error] of cases) {
      const { call, session } = await sipCall(wac, server, "+34600111222");
      const tracks = (call.localStream as unknown as FakeStream).getTracks() as FakeTrack[];
      session.fail(status, cause);
      assert.equal(call.state, "ended");
      assert.equal(call.ended?.reason, reason, `status ${status}`);
      assert.equal(call.ended?.sipStatus, status);
      assert.equal(call.ended?.error?.status, error, `status ${status}`);
      assert.ok(tracks.every((t) => t.stopped), "the media is released");
    }
    assert.deepEqual(wac.activeCalls, []);
  });

  it("hangs up, cancels, holds and resumes, mutes, and sends DTMF as RFC 4733 events", async () => {
    const { wac, server } = await loggedIn();
    const ringing = await sipCall(wac, server, "+34600111222");
    ringing.session.ring();
    assert.equal(ringing.call.state, "ringing");
    await ringing.call.hangup();
    assert.deepEqual(ringing.call.ended, { reason: "CANCELLED", endedBy: "alice" });
    assert.deepEqual(ringing.session.terminated, [undefined]);

    const { call, session } = await sipCall(wac, server, "+34600111222");
    assert.throws(() => call.sendDtmf("1"), (e: WacError) => e.code === Status.FAILED_PRECONDITION);
    session.accept();
    assert.equal(call.state, "active");

    let held = false;
    const hold = call.hold().then(() => (held = true));
    await settle();
    assert.equal(held, false, "waits for the answer to the re-INVITE");
    assert.equal(call.onHold, true);
    session.answerReoffer();
    await hold;
    const resume = call.resume();
    session.answerReoffer();
    await resume;
    assert.equal(call.onHold, false);
    assert.deepEqual(
      session.reoffers,
      [],
      "hold and resume each answered",
    );

    call.mute("audio");
    assert.equal(call.isMuted("audio"), true);
    call.unmute();
    assert.equal(call.isMuted("audio"), false);

    call.sendDtmf("12#", { durationMs: 120 });
    assert.deepEqual(session.dtmf, [{ tones: "12#", options: { duration: 120, interToneGap: 70, transportType: "RFC2833" } }]);
    assert.throws(() => call.sendDtmf("x"), (e: WacError) => e.code === Status.INVALID_ARGUMENT);

    await call.hangup();
    assert.deepEqual(call.ended, { reason: "COMPLETED", endedBy: "alice" });
    assert.equal(session.isEnded(), true);
    assert.equal(lastPc().closed, true);
  });

  it("a hold the gateway refuses fails and ends the call as JsSIP does", async () => {
    const { wac, server } = await loggedIn();
    const { call, session } = await sipCall(wac, server, "+34600111222");
    session.accept();
    const hold = call.hold();
    session.listeners.emit("ended", { originator: "local", cause: "WebRTC Error" });
    await assert.rejects(hold, (e: WacError) => e.code === Status.CANCELLED);
    assert.equal(call.ended?.reason, "FAILED");
  });

  it("raises incomingCall for a call from the gateway, and answers it with the SDK's media", async () => {
    const { wac, server, mediaRequests } = await loggedIn();
    const incoming: Call[] = [];
    wac.on("incomingCall", (c) => incoming.push(c));
    const session: FakeSipSession = FakeSipUa.last.invite({ user: "+34600111222", displayName: "A caller" });
    assert.equal(incoming.length, 1);
    const call = incoming[0]!;
    assert.equal(call.via, "sip");
    assert.equal(call.direction, "incoming");
    assert.equal(call.state, "ringing");
    assert.equal(call.peer, "+34600111222");
    assert.equal(call.callerDisplayName, "A caller");
    assert.equal(call.id, session.id);
    assert.deepEqual(wac.activeCalls, [call]);

    const answering = call.answer({ audio: true });
    await server.answer("CallsService.GetIceServers", ICE);
    await answering;
    assert.deepEqual(mediaRequests, [{ audio: true, video: false }]);
    assert.deepEqual(session.answered[0]?.pcConfig, { iceServers: [{ urls: ["stun:stun.test"] }] });
    assert.equal(session.answered[0]?.mediaStream, call.localStream);
    assert.equal(call.state, "active");
    session.bye();
    assert.equal(call.ended?.reason, "COMPLETED");
    assert.equal(call.ended?.endedBy, "+34600111222");
  });

  it("declines a call from the gateway with 603, or 486 when busy; a CANCEL answered elsewhere says so", async () => {
    const { wac } = await loggedIn();
    const incoming: Call[] = [];
    wac.on("incomingCall", (c) => incoming.push(c));
    const ua = FakeSipUa.last;
    const first = ua.invite({ user: "bob" });
    await incoming[0]!.hangup();
    assert.deepEqual(first.terminated, [{ status_code: 603 }]);
    assert.deepEqual(incoming[0]!.ended, { reason: "REJECTED", endedBy: "alice" });
    const second = ua.invite({ user: "bob" });
    await incoming[1]!.reject({ busy: true });
    assert.deepEqual(second.terminated, [{ status_code: 486 }]);
    assert.equal(incoming[1]!.ended?.reason, "BUSY");
    const third = ua.invite({ user: "bob" });
    third.cancel('SIP;cause=200;text="Call completed elsewhere"');
    assert.equal(incoming[2]!.ended?.reason, "ANSWERED_ELSEWHERE");
    assert.deepEqual(wac.activeCalls, []);
  });

  it("ends its gateway calls when the session ends", async () => {
    const { wac, server } = await loggedIn();
    const { call, session } = await sipCall(wac, server, "+34600111222");
    session.accept();
    server.event({ sessionRevoked: { sessionId: "s1", reason: "REVOKED" } });
    assert.equal(call.ended?.reason, "FAILED");
    assert.equal(session.isEnded(), true, "BYE sent");
    assert.deepEqual(FakeSipUa.last.log.at(-1), ["stop"]);
  });
});
