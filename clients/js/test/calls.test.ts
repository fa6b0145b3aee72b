import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import type { Call } from "../src/calls/call.js";
import { candidateFromProto, candidateToProto, sdpIsHold } from "../src/calls/webrtc.js";
import { settle } from "./fakes.js";
import { loggedIn } from "./logged-in.js";
import { FakePeerConnection, type FakeStream, type FakeTrack } from "./fake-webrtc.js";

const OFFER_SDP = "v=0 remote offer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendrecv\r\n";
const ANSWER_SDP = "v=0 remote answer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendrecv\r\n";

const ICE = { iceServers: [{ urls: ["stun:stun.test"] }, { urls: ["turn:turn.test"], username: "1:alice", credential: "c" }], ttl: "3600s" };

function lastPc(): FakePeerConnection {
  const pc = FakePeerConnection.instances.at(-1);
  assert.ok(pc, "a peer connection was made");
  return pc;
}

describe("calls", () => {
  beforeEach(() => {
    FakePeerConnection.instances.length = 0;
  });

  it("places a call: media, ICE servers, CreateCall, trickle ICE, answer, hangup", async () => {
    const { wac, server, mediaRequests } = await loggedIn();
    const placing = wac.call("bob", { audio: true, video: true });
    await server.answer("CallsService.GetIceServers", ICE);
    assert.deepEqual(mediaRequests, [{ audio: true, video: true }]);
    const pc = lastPc();
    assert.deepEqual(pc.configuration.iceServers, [
      { urls: ["stun:stun.test"] },
      { urls: ["turn:turn.test"], username: "1:alice", credential: "c" },
    ]);
    pc.gather("candidate:1 1 udp 1 192.0.2.1 5000 typ host");
    const create = server.link.last("CallsService.CreateCall");
    assert.equal(create.params.callee, "bob");
    assert.equal(create.params.offer.type, "OFFER");
    assert.match(create.params.offer.sdp, /m=audio[\s\S]*m=video/);
    assert.deepEqual(create.params.media, { audio: true, video: true });
    assert.equal(server.link.requests("CallsService.SendIceCandidate").length, 0, "held until the call has an id");
    // The callee's device rang before the CreateCall answer came back.
    server.event({ callRinging: { call: { callId: "c1", state: "RINGING" } } });
    server.link.reply(create.id, { callId: "c1", state: "RINGING", caller: "alice", callee: "bob" });
    const call = await placing;
    await settle();
    assert.equal(call.id, "c1");
    assert.equal(call.direction, "outgoing");
    assert.equal(call.peer, "bob");
    assert.equal(call.state, "ringing");
    assert.deepEqual(server.link.last("CallsService.SendIceCandidate").params, {
      callId: "c1",
      candidate: { candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "uf" },
    });
    const states: string[] = [];
    call.on("state", (s) => states.push(s));

    server.event({ iceCandidate: { callId: "c1", candidate: { candidate: "candidate:r1", sdpMid: "0" } } });
    await settle();
    assert.deepEqual(pc.candidates, [], "held until the answer is set");
    server.event({ callAnswered: { call: { callId: "c1", state: "ACTIVE" }, answer: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await settle();
    assert.equal(pc.remoteDescription?.sdp, ANSWER_SDP);
    assert.deepEqual(pc.candidates, [{ candidate: "candidate:r1", sdpMLineIndex: 0, sdpMid: "0" }]);
    assert.equal(call.state, "active");
    server.event({ iceCandidate: { callId: "c1", endOfCandidates: true } });
    await settle();
    assert.equal(pc.candidates.at(-1), undefined, "end of candidates is addIceCandidate()");
    pc.gather(null);
    assert.deepEqual(server.link.last("CallsService.SendIceCandidate").params, { callId: "c1", endOfCandidates: true });

    const remote: MediaStream[] = [];
    call.on("remoteStream", (s) => remote.push(s));
    const stream = { getTracks: () => [] } as unknown as FakeStream;
    pc.remoteTrack("audio", stream);
    pc.remoteTrack("video", stream);
    assert.equal(remote.length, 1);
    assert.equal(call.remoteStream, stream as unknown as MediaStream);

    call.mute("audio");
    assert.equal(call.isMuted("audio"), true);
    assert.equal(call.isMuted("video"), false);
    call.unmute();
    assert.equal(call.isMuted("audio"), false);
    call.sendDtmf("12#");
    const audioSender = pc.getSenders().find((s) => s.track?.kind === "audio")!;
    assert.deepEqual(audioSender.dtmf!.tones, ["12#"]);

    const ended: unknown[] = [];
    call.on("ended", (info) => ended.push(info));
    const hangup = call.hangup();
    assert.deepEqual(await server.answer("CallsService.HangupCall", { callId: "c1", state: "ENDED" }), { callId: "c1" });
    await hangup;
    assert.deepEqual(states, ["active", "ended"]);
    assert.deepEqual(ended, [{ reason: "COMPLETED", endedBy: "alice" }]);
    assert.equal(pc.closed, true);
    const tracks = (call.localStream as unknown as FakeStream).getTracks() as FakeTrack[];
    assert.ok(tracks.every((t) => t.stopped), "local media is released");
    assert.deepEqual(wac.activeCalls, []);
  });

  it("resolves a call that ended at once (callee unavailable) in the ended state", async () => {
    const { wac, server } = await loggedIn();
    const placing = wac.call("tel:+34600111222");
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.CreateCall", { callId: "c5", state: "ENDED", endReason: "UNAVAILABLE", endedBy: "wac" });
    const call = await placing;
    assert.equal(call.state, "ended");
    assert.deepEqual(call.ended, { reason: "UNAVAILABLE", endedBy: "wac" });
    assert.equal(lastPc().closed, true);
  });

  it("caches the ICE servers for half their lifetime", async () => {
    const { wac, server, clock } = await loggedIn();
    const first = wac.iceServers();
    await server.answer("CallsService.GetIceServers", ICE);
    await first;
    await wac.iceServers();
    assert.equal(server.link.requests("CallsService.GetIceServers").length, 1);
    await clock.advance(1_800_000);
    const again = wac.iceServers();
    await server.answer("CallsService.GetIceServers", ICE);
    await again;
    assert.equal(server.link.requests("CallsService.GetIceServers").length, 2);
  });

  it("answers an incoming call, follows the peer's renegotiation, holds and ends", async () => {
    const { wac, server } = await loggedIn();
    const incoming: Call[] = [];
    wac.on("incomingCall", (call) => incoming.push(call));
    server.event({
      callInvited: {
        call: { callId: "c2", caller: "bob", callee: "alice", state: "RINGING", media: { audio: true } },
        offer: { type: "OFFER", sdp: OFFER_SDP },
        callerDisplayName: "Bob",
      },
    });
    assert.equal(incoming.length, 1);
    const call = incoming[0]!;
    assert.equal(call.state, "ringing");
    assert.equal(call.direction, "incoming");
    assert.equal(call.peer, "bob");
    assert.equal(call.callerDisplayName, "Bob");
    server.event({ iceCandidate: { callId: "c2", candidate: { candidate: "candidate:r1", sdpMLineIndex: 0 } } });

    const answering = call.answer({ audio: true });
    await server.answer("CallsService.GetIceServers", ICE);
    const pc = lastPc();
    assert.equal(pc.remoteDescription?.sdp, OFFER_SDP);
    assert.deepEqual(pc.candidates, [{ candidate: "candidate:r1", sdpMLineIndex: 0 }]);
    pc.gather("candidate:local");
    const answer = server.link.last("CallsService.AnswerCall");
    assert.equal(answer.params.callId, "c2");
    assert.equal(answer.params.answer.type, "ANSWER");
    assert.equal(server.link.requests("CallsService.SendIceCandidate").length, 0, "held until the answer is accepted");
    server.link.reply(answer.id, { callId: "c2", state: "ACTIVE" });
    await answering;
    assert.equal(call.state, "active");
    assert.equal(server.link.last("CallsService.SendIceCandidate").params.candidate.candidate, "candidate:local");

    // The caller puts us on hold: we answer its offer by ourselves.
    const holds: boolean[] = [];
    call.on("remoteHold", (h) => holds.push(h));
    server.event({
      callUpdated: {
        call: { callId: "c2" },
        description: { type: "OFFER", sdp: "v=0 hold\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendonly\r\n" },
      },
    });
    await settle();
    const reply = server.link.last("CallsService.Renegotiate");
    assert.equal(reply.params.description.type, "ANSWER");
    assert.deepEqual(holds, [true]);
    server.link.reply(reply.id, { callId: "c2" }); // our next offer waits for this receipt

    // We put the call on hold: a sendonly offer, done when the answer comes.
    let held = false;
    const hold = call.hold().then(() => (held = true));
    await settle();
    const offer = server.link.last("CallsService.Renegotiate");
    assert.equal(offer.params.description.type, "OFFER");
    assert.match(offer.params.description.sdp, /a=sendonly/);
    server.link.reply(offer.id, { callId: "c2" });
    await settle();
    assert.equal(held, false, "waits for the answer");
    server.event({ callUpdated: { call: { callId: "c2" }, description: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await hold;
    assert.equal(call.onHold, true);
    assert.equal(pc.signalingState, "stable");

    const ended: unknown[] = [];
    call.on("ended", (info) => ended.push(info));
    server.event({
      callEnded: { call: { callId: "c2", state: "ENDED", endReason: "COMPLETED", endedBy: "bob" }, reason: "COMPLETED" },
    });
    assert.deepEqual(ended, [{ reason: "COMPLETED", endedBy: "bob" }]);
    assert.equal(pc.closed, true);
  });

  it("rolls back its own offer on a collision when polite (callee), then offers again", async () => {
    const { wac, server } = await loggedIn();
    let call: Call | undefined;
    wac.on("incomingCall", (c) => (call = c));
    server.event({ callInvited: { call: { callId: "c3", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    const answering = call!.answer();
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.AnswerCall", { callId: "c3", state: "ACTIVE" });
    await answering;
    const pc = lastPc();

    const hold = call!.hold();
    await settle();
    const ours = server.link.last("CallsService.Renegotiate");
    assert.equal(ours.params.description.type, "OFFER");
    // Bob's offer crosses ours.
    server.event({ callUpdated: { call: { callId: "c3" }, description: { type: "OFFER", sdp: OFFER_SDP } } });
    server.link.reply(ours.id, { callId: "c3" });
    await settle();
    server.link.reply(server.link.last("CallsService.Renegotiate").id, { callId: "c3" }); // our answer to Bob's
    await settle();
    const sent = server.link.requests("CallsService.Renegotiate").map((r) => r.params.description.type);
    assert.deepEqual(sent, ["OFFER", "ANSWER", "OFFER"], "answered Bob's offer, then offered again");
    server.link.reply(server.link.last("CallsService.Renegotiate").id, { callId: "c3" });
    server.event({ callUpdated: { call: { callId: "c3" }, description: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await hold;
    assert.equal(pc.signalingState, "stable");
    const hangup = call!.hangup();
    await server.answer("CallsService.HangupCall", {});
    await hangup;
  });

  it("waits for the caller's offer when the server settles glare against ours (callee), then offers again", async () => {
    const { wac, server } = await loggedIn();
    let call: Call | undefined;
    wac.on("incomingCall", (c) => (call = c));
    server.event({ callInvited: { call: { callId: "c5", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    const answering = call!.answer();
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.AnswerCall", { callId: "c5", state: "ACTIVE" });
    await answering;
    const pc = lastPc();

    let held = false;
    const hold = call!.hold().then(() => (held = true));
    await settle();
    // The caller's offer reached the server first: ours is refused, and theirs follows.
    const ours = server.link.last("CallsService.Renegotiate");
    server.link.replyError(ours.id, 9, "renegotiation glare: the caller's offer wins; answer it and retry", "FAILED_PRECONDITION");
    await settle();
    assert.equal(held, false, "still holding: the caller's offer is on its way");
    server.event({ callUpdated: { call: { callId: "c5" }, description: { type: "OFFER", sdp: OFFER_SDP } } });
    await settle();
    const answer = server.link.last("CallsService.Renegotiate");
    assert.equal(answer.params.description.type, "ANSWER");
    assert.equal(server.link.requests("CallsService.Renegotiate").length, 2, "no new offer before the server took our answer");
    server.link.reply(answer.id, { callId: "c5" });
    await settle();
    const again = server.link.last("CallsService.Renegotiate");
    assert.equal(again.params.description.type, "OFFER");
    assert.match(again.params.description.sdp, /a=sendonly/);
    server.link.reply(again.id, { callId: "c5" });
    server.event({ callUpdated: { call: { callId: "c5" }, description: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await hold;
    assert.equal(call!.onHold, true);
    assert.equal(pc.signalingState, "stable");
    const hangup = call!.hangup();
    await server.answer("CallsService.HangupCall", {});
    await hangup;
  });

  it("restarts ICE from the caller when it fails, and keeps the call across a dropped socket", async () => {
    const { wac, server, network, clock } = await loggedIn();
    const placing = wac.call("bob");
    await server.answer("CallsService.GetIceServers", ICE);
    await server.answer("CallsService.CreateCall", { callId: "c4", state: "RINGING" });
    const call = await placing;
    server.event({ callAnswered: { call: { callId: "c4" }, answer: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await settle();
    const pc = lastPc();
    assert.equal(call.state, "active");

    // The socket drops: the call and its peer connection carry on.
    network.current.fail({ code: 1006, wasOpen: true });
    assert.equal(wac.state, "suspended");
    assert.equal(call.state, "active");
    assert.equal(pc.closed, false);

    // ICE fails meanwhile: the restart offer waits for the link.
    pc.setIceState("failed");
    await settle();
    assert.deepEqual(pc.offerOptions.at(-1), { iceRestart: true });
    await clock.advance(500);
    network.current.accept();
    await settle();
    assert.deepEqual(
      network.current.sent.map((r) => r.method),
      ["EventsService.Subscribe", "CallsService.Renegotiate"],
      "resubscribed first, then the queued offer went out",
    );
    assert.deepEqual(network.current.last("EventsService.Subscribe").params, { afterSeq: "1" });
    network.current.reply(network.current.last("CallsService.Renegotiate").id, { callId: "c4" });
    network.current.event({ seq: "2", callUpdated: { call: { callId: "c4" }, description: { type: "ANSWER", sdp: ANSWER_SDP } } });
    await settle();
    assert.equal(pc.signalingState, "stable");
    network.current.event({ seq: "3", callEnded: { call: { callId: "c4", endReason: "COMPLETED", endedBy: "bob" }, reason: "COMPLETED" } });
    assert.equal(call.state, "ended");
  });

  it("rejects an incoming call, or declines it on hangup while ringing", async () => {
    const { wac, server } = await loggedIn();
    const calls: Call[] = [];
    wac.on("incomingCall", (c) => calls.push(c));
    server.event({ callInvited: { call: { callId: "c6", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    server.event({ callInvited: { call: { callId: "c7", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    server.event({ callInvited: { call: { callId: "c7", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    assert.equal(calls.length, 2, "a repeated invitation is the same call");
    const busy = calls[0]!.reject({ busy: true });
    await server.answer("CallsService.RejectCall", {});
    await busy;
    assert.deepEqual(server.link.last("CallsService.RejectCall").params, { callId: "c6", reason: "BUSY" });
    assert.equal(calls[0]!.ended?.reason, "BUSY");
    const declined = calls[1]!.hangup();
    await server.answer("CallsService.RejectCall", {});
    await declined;
    assert.deepEqual(server.link.last("CallsService.RejectCall").params, { callId: "c7", reason: "DECLINED" });
    // A resync replays old invitations: an ended call does not ring again.
    server.event({ callInvited: { call: { callId: "c6", caller: "bob", state: "RINGING" }, offer: { type: "OFFER", sdp: OFFER_SDP } } });
    assert.equal(calls.length, 2);
  });
});

describe("WebRTC helpers", () => {
  it("converts candidates both ways, filling proto3's omitted zero index", () => {
    assert.deepEqual(candidateToProto({ candidate: "c", sdpMid: null, sdpMLineIndex: 0, usernameFragment: null }), {
      candidate: "c",
      sdpMLineIndex: 0,
    });
    assert.deepEqual(candidateFromProto({ candidate: "c" }), { candidate: "c", sdpMLineIndex: 0 });
    assert.deepEqual(candidateFromProto({ candidate: "c", sdpMid: "audio", sdpMLineIndex: 1, usernameFragment: "u" }), {
      candidate: "c",
      sdpMid: "audio",
      sdpMLineIndex: 1,
      usernameFragment: "u",
    });
  });

  it("reads hold from an SDP's directions", () => {
    assert.equal(sdpIsHold(OFFER_SDP), false);
    assert.equal(sdpIsHold("v=0\r\nm=audio 9 x 0\r\na=sendonly\r\nm=video 9 x 0\r\na=inactive\r\n"), true);
    assert.equal(sdpIsHold("v=0\r\nm=audio 9 x 0\r\na=sendonly\r\nm=video 9 x 0\r\na=sendrecv\r\n"), false);
    assert.equal(sdpIsHold("v=0\r\n"), false);
  });
});
