import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import type { Conference, ConferenceEndedInfo, RemoteParticipant } from "../src/conferences/conference.js";
import { janusUrl } from "../src/wac.js";
import { FakeJanus, JANUS_ANSWER_SDP, JANUS_OFFER_SDP } from "./fake-janus.js";
import { FakePeerConnection, FakeStream, FakeTrack } from "./fake-webrtc.js";
import { settle } from "./fakes.js";
import { loggedIn } from "./logged-in.js";

// Above 2**32 and below 2**53: proto3 JSON sends uint64s as strings, Janus wants numbers.
const ROOM = 4_503_599_627_370_495;
const ME = 7_000_000_011;
const BOB = 7_000_000_022;
const CAROL = 7_000_000_033;

function joined(overrides: object = {}) {
  return {
    conference: {
      conferenceId: "cf1",
      title: "standup",
      creator: "bob",
      media: "AUDIO_VIDEO",
      invitees: ["alice", "carol"],
      state: "ACTIVE",
      participants: [
        { username: "bob", feedId: String(BOB) },
        { username: "alice", feedId: String(ME) },
      ],
    },
    janusPath: "/janus",
    room: String(ROOM),
    token: "jt1",
    feedId: String(ME),
    iceServers: [{ urls: ["stun:stun.test"] }, { urls: ["turn:turn.test"], username: "1:alice", credential: "c" }],
    roomToken: "rt1",
    ...overrides,
  };
}

/** Lets the fake Janus and the SDK answer each other to the end. */
const flush = () => settle(20);

function tracks(stream: MediaStream | null): FakeTrack[] {
  return ((stream as unknown as FakeStream | null)?.getTracks() ?? []) as FakeTrack[];
}

function peerConnections() {
  return FakePeerConnection.instances;
}

/** alice logged in, bob publishing in the room, and alice joined with audio and video. */
async function inRoom(options: { audio?: boolean; video?: boolean } = { audio: true, video: true }) {
  const janus = new FakeJanus();
  janus.room = ROOM;
  const context = await loggedIn({ createJanusSocket: janus.factory });
  janus.remote.set(BOB, "bob");
  const joining = context.wac.conferences.join("cf1", options);
  await context.server.answer("ConferencesService.JoinConference", joined());
  await flush();
  const conference = await joining;
  await flush();
  return { ...context, janus, conference };
}

/** The requests Janus received, plugin messages by their body's request. */
function janusOrder(janus: FakeJanus): string[] {
  return janus.requests.map((r) => (r.janus === "message" ? r.body.request : r.janus));
}

function record(conference: Conference) {
  const events: string[] = [];
  const ended: ConferenceEndedInfo[] = [];
  conference.on("participantJoined", (p) => events.push(`joined ${p.username}`));
  conference.on("participantLeft", (p) => events.push(`left ${p.username}`));
  conference.on("participantStream", (p) => events.push(`stream ${p.username}`));
  conference.on("state", (s) => events.push(`state ${s}`));
  conference.on("ended", (info) => ended.push(info));
  return { events, ended };
}

describe("conferences", () => {
  beforeEach(() => {
    FakePeerConnection.instances.length = 0;
  });

  it("join: JoinConference, then Janus: a session, the publisher in the room, published, subscribed to the publisher there", async () => {
    const janus = new FakeJanus();
    janus.room = ROOM;
    const { wac, server, mediaRequests } = await loggedIn({ createJanusSocket: janus.factory });
    janus.remote.set(BOB, "bob");
    const joining = wac.conferences.join("cf1", { audio: true, video: true });
    assert.deepEqual(await server.answer("ConferencesService.JoinConference", joined()), { conferenceId: "cf1" });
    await flush();
    const conference = await joining;
    await flush();

    assert.equal(janus.socket.url, "wss://wac.test/janus");
    assert.equal(janus.socket.protocol, "janus-protocol");
    assert.deepEqual(mediaRequests, [{ audio: true, video: true }]);
    assert.deepEqual(
      janus.requests.slice(0, 2).map((r) => r.janus),
      ["create", "attach"],
    );
    assert.equal(janus.sentOf("attach")[0]!.plugin, "janus.plugin.videoroom");
    // The uint64 strings of the WAPI go to Janus as numbers.
    assert.deepEqual(janus.sentOf("message", "join")[0]!.body, {
      request: "join",
      ptype: "publisher",
      room: ROOM,
      id: ME,
      display: "alice",
      token: "rt1",
    });
    const configure = janus.sentOf("message", "configure")[0]!;
    assert.deepEqual(configure.body, { request: "configure", audio: true, video: true });
    assert.equal(configure.jsep!.type, "offer");
    assert.match(configure.jsep!.sdp, /m=audio[\s\S]*a=sendonly[\s\S]*m=video[\s\S]*a=sendonly/);
    const [publisherPc, subscriberPc] = peerConnections();
    assert.ok(publisherPc && subscriberPc);
    assert.deepEqual(publisherPc.configuration.iceServers, [
      { urls: ["stun:stun.test"] },
      { urls: ["turn:turn.test"], username: "1:alice", credential: "c" },
    ]);
    assert.equal(publisherPc.remoteDescription?.sdp, JANUS_ANSWER_SDP);
    assert.equal(conference.peerConnection, publisherPc as unknown as RTCPeerConnection);

    // bob was publishing: a handle of its own, joined as subscriber with alice's private id.
    const privateId = janus.publisher().privateId;
    assert.deepEqual(janus.sentOf("message", "join")[1]!.body, {
      request: "join",
      ptype: "subscriber",
      room: ROOM,
      streams: [{ feed: BOB }],
      private_id: privateId,
    });
    assert.equal(subscriberPc.remoteDescription?.sdp, JANUS_OFFER_SDP);
    const start = janus.sentOf("message", "start")[0]!;
    assert.deepEqual(start.body, { request: "start" });
    assert.equal(start.jsep!.type, "answer");
    assert.equal(start.jsep!.sdp, subscriberPc.localDescription?.sdp);
    assert.notEqual(start.handle_id, configure.handle_id);

    assert.equal(conference.state, "joined");
    assert.equal(conference.id, "cf1");
    assert.equal(conference.info.title, "standup");
    assert.deepEqual([...conference.participants.keys()], ["bob"]);
    const bob = conference.participants.get("bob")!;
    assert.equal(bob.feedId, BOB);
    assert.equal(bob.peerConnection, subscriberPc as unknown as RTCPeerConnection);
    assert.equal(bob.stream, null);
    assert.deepEqual(wac.conferences.joined, [conference]);

    // bob's media: one stream with both tracks, announced on each new track.
    const { events } = record(conference);
    subscriberPc.remoteTrack("audio", new FakeStream());
    subscriberPc.remoteTrack("video", new FakeStream());
    assert.deepEqual(events, ["stream bob", "stream bob"]);
    assert.deepEqual(tracks(bob.stream).map((t) => t.kind), ["audio", "video"]);

    // Trickle ICE both ways.
    publisherPc.gather("candidate:1 1 udp 1 192.0.2.1 5000 typ host");
    publisherPc.gather(null);
    await flush();
    assert.deepEqual(janus.publisher().candidates, [
      { candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 },
      { completed: true },
    ]);
    const subscriber = janus.handles("subscriber")[0]!;
    janus.trickle(subscriber, "candidate:9 1 udp 1 198.51.100.9 6000 typ host");
    janus.trickle(subscriber, null);
    await flush();
    assert.deepEqual(subscriberPc.candidates, [{ candidate: "candidate:9 1 udp 1 198.51.100.9 6000 typ host", sdpMid: "0", sdpMLineIndex: 0 }, undefined]);

    // Every request carried the Janus token and a transaction of its own.
    assert.deepEqual(janus.violations, []);
    assert.ok(janus.requests.every((r) => r.janus === "create" || r.session_id === janus.publisher().session.id));
  });

  it("holds its candidates until Janus has its offer (publisher) or its answer (subscriber)", async () => {
    FakePeerConnection.gatherOnSetLocal = "candidate:early";
    const { janus } = await inRoom().finally(() => (FakePeerConnection.gatherOnSetLocal = null));
    const order = janusOrder(janus);
    assert.ok(order.indexOf("configure") < order.indexOf("trickle"), order.join(","));
    assert.ok(order.indexOf("start") < order.lastIndexOf("trickle"), order.join(","));
    assert.deepEqual(janus.sentOf("trickle").map((r) => r.candidate), [
      { candidate: "candidate:early", sdpMid: "0", sdpMLineIndex: 0 },
      { candidate: "candidate:early", sdpMid: "0", sdpMLineIndex: 0 },
    ]);
  });

  it("a later publisher appears and one that leaves disappears; wac's names win over display names", async () => {
    const { conference, janus, server } = await inRoom();
    const { events } = record(conference);
    const seen: RemoteParticipant[] = [];
    conference.on("participantJoined", (p) => seen.push(p));

    janus.publish(CAROL, "carol");
    await flush();
    assert.deepEqual(events, ["joined carol"]);
    assert.equal(seen[0]!.feedId, CAROL);
    const subscriptions = janus.sentOf("message", "join").filter((r) => r.body.ptype === "subscriber");
    assert.deepEqual(subscriptions.at(-1)!.body.streams, [{ feed: CAROL }]);
    assert.ok(conference.participants.get("carol")?.peerConnection, "subscribed to carol");

    // A feed that says it is "mallory" but wac knows as dave's.
    const DAVE = 7_000_000_044;
    server.event({
      conferenceParticipantJoined: {
        conference: { conferenceId: "cf1", participants: [{ username: "dave", feedId: String(DAVE) }] },
        username: "dave",
      },
    });
    await flush();
    janus.publish(DAVE, "mallory");
    await flush();
    assert.ok(conference.participants.has("dave"));
    assert.ok(!conference.participants.has("mallory"));
    assert.equal(conference.participants.get("dave")!.display, "mallory");

    // bob unpublishes: gone, his subscription closed and detached.
    const bobPc = conference.participants.get("bob")!.peerConnection as unknown as FakePeerConnection;
    const bobHandle = janus.handles("subscriber").find((h) => h.feed === BOB)!;
    janus.unpublish(BOB);
    await flush();
    assert.deepEqual(events.slice(-1), ["left bob"]);
    assert.ok(!conference.participants.has("bob"));
    assert.equal(bobPc.closed, true);
    assert.ok(janus.sentOf("detach").some((r) => r.handle_id === bobHandle.id));

    // A participant that joins without publishing yet (notify_joining), then leaves.
    janus.joining(7_000_000_055, "erin");
    await flush();
    assert.deepEqual(events.slice(-1), ["joined erin"]);
    assert.equal(conference.participants.get("erin")!.peerConnection, null);
    janus.notify(janus.publisher(), { videoroom: "event", room: ROOM, leaving: 7_000_000_055 });
    await flush();
    assert.deepEqual(events.slice(-1), ["left erin"]);
    // Another participant kicked out by an operator.
    janus.kick(CAROL);
    await flush();
    assert.deepEqual(events.slice(-1), ["left carol"]);
    assert.equal(conference.state, "joined");
    assert.deepEqual(janus.violations, []);
  });

  it("kicked ends the conference for this device; so does the room's destruction", async () => {
    const { wac, conference, janus, server, clock } = await inRoom();
    const { ended } = record(conference);
    const local = tracks(conference.localStream);
    janus.kick(ME);
    await flush();
    // Janus's word alone: wac's, which says why, is waited for a moment.
    assert.deepEqual(ended, []);
    await clock.advance(2_000);
    await flush();
    assert.deepEqual(ended, [{ reason: "kicked" }]);
    assert.equal(conference.state, "ended");
    assert.ok(local.every((t) => t.stopped), "the camera and microphone are released");
    assert.ok(peerConnections().every((pc) => pc.closed));
    assert.equal(janus.socket.closedByClient, true);
    assert.equal(conference.participants.size, 0);
    assert.equal(server.link.requests("ConferencesService.LeaveConference").length, 0, "wac took it out: nothing to tell");

    const again = await inRoomAgain(janus, server, wac);
    const second = record(again);
    janus.destroyRoom();
    await flush();
    assert.deepEqual(second.ended, [{ reason: "ended" }]);
  });

  it("a kick by Janus takes wac's word for why: KICKED ends at once, CONNECTION_LOST joins again", async () => {
    const { conference, janus, server, wac } = await inRoom();
    const { ended } = record(conference);
    janus.kick(ME);
    await flush();
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "KICKED" } });
    await flush();
    assert.deepEqual(ended, [{ reason: "kicked", leftReason: "KICKED" }]);

    // wac's CONNECTION_LOST (the device was counted out while away), with Janus's kick after it or before.
    for (const janusFirst of [false, true]) {
      const again = await inRoomAgain(janus, server, wac);
      const second = record(again);
      const lost = { conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "CONNECTION_LOST" } };
      if (janusFirst) janus.kick(ME);
      else server.event(lost);
      await flush();
      if (janusFirst) server.event(lost);
      else janus.kick(ME);
      await flush();
      assert.equal(again.state, "reconnecting");
      await server.answer("ConferencesService.JoinConference", joined());
      await flush();
      assert.equal(again.state, "joined", `Janus first: ${janusFirst}`);
      assert.deepEqual(second.ended, []);
      const leaving = again.leave();
      await server.answer("ConferencesService.LeaveConference", { conferenceId: "cf1" });
      await leaving;
    }
  });

  it("wac's events: re-emitted on wac.conferences; conferenceEnded and a kick by wac end the live conference", async () => {
    const { wac, conference, server, janus } = await inRoom();
    const seen: string[] = [];
    wac.conferences.on("invited", (e) => seen.push(`invited ${e.conference?.conferenceId} by ${e.creatorDisplayName}`));
    wac.conferences.on("participantJoined", (e) => seen.push(`joined ${e.username}`));
    wac.conferences.on("participantLeft", (e) => seen.push(`left ${e.username} ${e.reason}`));
    wac.conferences.on("ended", (e) => seen.push(`ended ${e.conference?.conferenceId}`));
    const { ended } = record(conference);
    server.event({ conferenceInvited: { conference: { conferenceId: "cf9", title: "later" }, creatorDisplayName: "Carol" } });
    server.event({ conferenceParticipantJoined: { conference: { conferenceId: "cf1" }, username: "carol" } });
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "carol", reason: "LEFT" } });
    await flush();
    assert.equal(conference.state, "joined");
    server.event({ conferenceEnded: { conference: { conferenceId: "cf1", state: "ENDED", endedBy: "bob" } } });
    await flush();
    assert.deepEqual(seen, ["invited cf9 by Carol", "joined carol", "left carol LEFT", "ended cf1"]);
    assert.deepEqual(ended, [{ reason: "ended", endedBy: "bob" }]);
    assert.equal(conference.info.state, "ENDED");
    assert.deepEqual(wac.conferences.joined, []);

    const again = await inRoomAgain(janus, server, wac);
    const second = record(again);
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "MOVED" } });
    await flush();
    assert.deepEqual(second.ended, [{ reason: "kicked", leftReason: "MOVED" }]);
  });

  it("mute and cameraOff toggle the local tracks and tell nobody", async () => {
    const { conference, janus, server } = await inRoom();
    const sent = janus.requests.length;
    const wapi = server.link.sent.length;
    const [audio, video] = tracks(conference.localStream);
    conference.mute();
    assert.equal(audio!.enabled, false);
    assert.equal(video!.enabled, true);
    assert.equal(conference.isMuted("audio"), true);
    conference.cameraOff(true);
    assert.equal(video!.enabled, false);
    assert.equal(conference.isMuted("video"), true);
    conference.mute(false);
    conference.cameraOff(false);
    assert.equal(audio!.enabled, true);
    assert.equal(video!.enabled, true);
    assert.equal(conference.isMuted(), false);
    await flush();
    assert.equal(janus.requests.length, sent);
    assert.equal(server.link.sent.length, wapi);
  });

  it("leave: LeaveConference to wac, then out of the room and the Janus session destroyed", async () => {
    const { wac, conference, janus, server } = await inRoom();
    const { ended } = record(conference);
    const local = tracks(conference.localStream);
    const session = janus.publisher().session;
    const before = janus.requests.length;
    const leaving = conference.leave();
    await flush();
    assert.deepEqual(server.link.last("ConferencesService.LeaveConference").params, { conferenceId: "cf1" });
    assert.deepEqual(
      janus.requests.slice(before).map((r) => (r.janus === "message" ? r.body.request : r.janus)),
      ["leave", "destroy"],
    );
    assert.equal(session.destroyed, true);
    assert.equal(janus.socket.closedByClient, true);
    assert.deepEqual(ended, [{ reason: "left" }]);
    assert.ok(local.every((t) => t.stopped));
    assert.deepEqual(wac.conferences.joined, []);
    await server.answer("ConferencesService.LeaveConference", { conferenceId: "cf1" });
    await leaving;
    await conference.leave(); // once is enough
    assert.equal(server.link.requests("ConferencesService.LeaveConference").length, 1);
    assert.deepEqual(janus.violations, []);
  });

  it("keeps the Janus session alive: a keepalive every 25 s", async () => {
    const { conference, janus, clock } = await inRoom();
    assert.equal(janus.sentOf("keepalive").length, 0);
    await clock.advance(25_000);
    assert.equal(janus.sentOf("keepalive").length, 1);
    await clock.advance(25_000);
    await clock.advance(25_000);
    const keepalives = janus.sentOf("keepalive");
    assert.equal(keepalives.length, 3);
    assert.ok(keepalives.every((k) => k.session_id === janus.publisher().session.id && k.token === "jt1"));
    assert.equal(conference.state, "joined");
    assert.deepEqual(janus.violations, []);
  });

  it("a session refresh fetches a fresh Janus token: the requests after it carry it", async () => {
    const { conference, janus, clock, server } = await inRoom();
    await clock.advance(14 * 60_000); // the access token expires in 15 min: refreshed a minute before
    const refresh = server.link.last("IdentityService.RefreshSession");
    const expireTime = new Date(clock.now() + 15 * 60_000).toISOString();
    server.link.reply(refresh.id, { sessionId: "s1", accessToken: "a2", refreshToken: "r2", expireTime });
    await flush();
    assert.equal(server.link.requests("ConferencesService.JoinConference").length, 2);
    janus.token = "jt2";
    await server.answer("ConferencesService.JoinConference", joined({ token: "jt2" }));
    await clock.advance(25_000);
    assert.equal(janus.sentOf("keepalive").at(-1)!.token, "jt2");
    assert.equal(conference.state, "joined");
  });

  it("a dropped Janus socket: JoinConference again, a new session, the room again; ends with 'error' if that fails", async () => {
    const { conference, janus, server } = await inRoom();
    const { events, ended } = record(conference);
    const oldSession = janus.publisher().session.id;
    const [oldPublisher, oldSubscriber] = peerConnections();
    janus.socket.drop();
    await flush();
    assert.equal(conference.state, "reconnecting");
    assert.ok(oldPublisher!.closed && oldSubscriber!.closed);
    assert.equal(conference.participants.get("bob")!.stream, null);
    assert.equal(server.link.requests("ConferencesService.JoinConference").length, 2);
    janus.token = "jt2";
    await server.answer("ConferencesService.JoinConference", joined({ token: "jt2" }));
    await flush();
    assert.equal(janus.sockets.length, 2);
    // The old session, in case Janus still held it, is claimed and destroyed first.
    const claim = janus.sentOf("claim")[0]!;
    assert.equal(claim.session_id, oldSession);
    assert.equal(conference.state, "joined");
    assert.deepEqual(events, ["state reconnecting", "state joined"]);
    assert.equal(janus.publisher().feedId, ME);
    const resubscribed = janus.handles("subscriber").filter((h) => h.feed === BOB);
    assert.equal(resubscribed.length, 1);
    const bob = conference.participants.get("bob")!;
    (bob.peerConnection as unknown as FakePeerConnection).remoteTrack("video", new FakeStream());
    assert.deepEqual(events.slice(-1), ["stream bob"]);
    assert.equal(peerConnections().length, 4);
    assert.deepEqual(janus.violations, []);

    // Once more, and wac refuses: over, with the reason, and wac is told.
    janus.socket.drop();
    await flush();
    server.link.replyError(server.link.last("ConferencesService.JoinConference").id, 9, "the conference has ended", "FAILED_PRECONDITION");
    await flush();
    assert.equal(ended.length, 1);
    assert.equal(ended[0]!.reason, "error");
    assert.equal(ended[0]!.error?.status, "FAILED_PRECONDITION");
    assert.equal(server.link.requests("ConferencesService.LeaveConference").length, 1);
    assert.ok(tracks(conference.localStream).every((t) => t.stopped));
  });

  it("wac counted this device out while its connection was down (CONNECTION_LOST): it joins again, not ended", async () => {
    const { conference, janus, server } = await inRoom();
    const { events, ended } = record(conference);
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "CONNECTION_LOST" } });
    await flush();
    assert.equal(conference.state, "reconnecting");
    assert.equal(server.link.requests("ConferencesService.JoinConference").length, 2);
    // A second word of it while the rejoin is under way changes nothing.
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "CONNECTION_LOST" } });
    await flush();
    assert.equal(server.link.requests("ConferencesService.JoinConference").length, 2);
    await server.answer("ConferencesService.JoinConference", joined());
    await flush();
    assert.equal(conference.state, "joined");
    assert.deepEqual(ended, []);
    assert.deepEqual(events.slice(0, 2), ["state reconnecting", "state joined"]);
    assert.equal(janus.publisher().feedId, ME);
    assert.deepEqual(janus.violations, []);
  });

  it("Janus kicks this device while wac's connection is down: it joins again once back, or ends on wac's KICKED", async () => {
    const { conference, janus, server, clock, wac } = await inRoom();
    const { ended } = record(conference);
    const before = server.link;
    before.fail();
    await flush();
    assert.equal(wac.state, "suspended");
    janus.kick(ME);
    await flush();
    assert.equal(conference.state, "reconnecting");
    assert.deepEqual(ended, []);
    // Back: the queued JoinConference goes out on the new link, and puts it back in the room.
    await clock.advance(clock.pending()[0] ?? 0);
    server.link.accept();
    await flush();
    assert.notEqual(server.link, before);
    await server.answer("ConferencesService.JoinConference", joined());
    await flush();
    assert.equal(conference.state, "joined");
    assert.deepEqual(ended, []);

    // Again, and this time wac's word (replayed on the new link) is an operator's kick: out.
    const second = server.link;
    second.fail();
    await flush();
    janus.kick(ME);
    await flush();
    assert.equal(conference.state, "reconnecting");
    await clock.advance(clock.pending()[0] ?? 0);
    server.link.accept();
    await flush();
    server.event({ conferenceParticipantLeft: { conference: { conferenceId: "cf1" }, username: "alice", reason: "KICKED" } });
    await flush();
    assert.deepEqual(ended, [{ reason: "kicked", leftReason: "KICKED" }]);
    // The rejoin wac answers after that is taken back.
    await server.answer("ConferencesService.JoinConference", joined());
    await flush();
    assert.equal(server.link.requests("ConferencesService.LeaveConference").length, 1);
  });

  it("a rejoin that Janus refuses ends the conference with 'error'", async () => {
    const { conference, janus, server } = await inRoom();
    const { ended } = record(conference);
    janus.socket.drop();
    await flush();
    janus.refuse = (body) => (body.request === "join" && body.ptype === "publisher" ? [433, "Unauthorized (not in the allowed list)"] : undefined);
    await server.answer("ConferencesService.JoinConference", joined());
    await flush();
    assert.equal(ended[0]?.reason, "error");
    assert.equal(ended[0]?.error?.status, "PERMISSION_DENIED");
  });

  it("shareScreen replaces the camera on the video sender; stopScreenShare (or the browser's stop) puts it back", async () => {
    const { conference, janus, displayRequests } = await inRoom();
    const sharing: boolean[] = [];
    conference.on("screenShare", (on) => sharing.push(on));
    const pc = conference.peerConnection as unknown as FakePeerConnection;
    const sender = pc.getSenders().find((s) => s.track?.kind === "video")!;
    const camera = sender.track;
    const before = janus.requests.length;
    const screen = await conference.shareScreen();
    assert.deepEqual(displayRequests, [{ video: true, audio: false }]);
    assert.equal(conference.screenSharing, true);
    const screenTrack = tracks(screen)[0]!;
    assert.equal(sender.track, screenTrack);
    assert.equal(janus.requests.length, before, "no renegotiation");
    await conference.stopScreenShare();
    assert.equal(sender.track, camera);
    assert.equal(screenTrack.stopped, true);
    assert.equal(conference.screenSharing, false);

    const again = await conference.shareScreen();
    tracks(again)[0]!.end(); // the browser's "Stop sharing"
    await flush();
    assert.equal(sender.track, camera);
    assert.equal(conference.screenSharing, false);
    assert.deepEqual(sharing, [true, false, true, false]);
  });

  it("shareScreen in an audio-only conference adds video and renegotiates with Janus", async () => {
    const janus = new FakeJanus();
    janus.room = ROOM;
    const { wac, server, mediaRequests } = await loggedIn({ createJanusSocket: janus.factory });
    const joining = wac.conferences.join("cf1");
    await server.answer("ConferencesService.JoinConference", joined({ conference: { conferenceId: "cf1", media: "AUDIO" } }));
    await flush();
    const conference = await joining;
    assert.deepEqual(mediaRequests, [{ audio: true, video: false }], "the conference's media decides");
    assert.deepEqual(janus.sentOf("message", "configure")[0]!.body, { request: "configure", audio: true, video: false });
    await conference.shareScreen();
    await flush();
    const configure = janus.sentOf("message", "configure");
    assert.equal(configure.length, 2);
    assert.deepEqual(configure[1]!.body, { request: "configure", audio: true, video: true });
    assert.match(configure[1]!.jsep!.sdp, /m=video/);
    const pc = conference.peerConnection as unknown as FakePeerConnection;
    assert.equal(pc.remoteDescription?.sdp, JANUS_ANSWER_SDP);
    assert.equal(pc.signalingState, "stable");
  });

  it("a publisher that adds a stream (a screen share) is subscribed to it too: update, Janus's new offer answered", async () => {
    const { conference, janus } = await inRoom();
    const bobPc = conference.participants.get("bob")!.peerConnection as unknown as FakePeerConnection;
    const starts = janus.sentOf("message", "start").length;
    janus.publish(BOB, "bob", ["0", "1"]); // nothing new: nothing to do
    await flush();
    assert.equal(janus.sentOf("message", "update").length, 0);
    janus.publish(BOB, "bob", ["0", "1", "2"]);
    await flush();
    const update = janus.sentOf("message", "update");
    assert.equal(update.length, 1);
    assert.deepEqual(update[0]!.body, { request: "update", subscribe: [{ feed: BOB, mid: "2" }] });
    assert.equal(janus.sentOf("message", "start").length, starts + 1);
    assert.equal(janus.sentOf("message", "start").at(-1)!.jsep!.sdp, bobPc.localDescription?.sdp);
    assert.equal(bobPc.signalingState, "stable");
    assert.equal(peerConnections().length, 2, "the same peer connection");
    assert.deepEqual(janus.violations, []);
  });

  it("a join Janus refuses fails: the media is released and wac is told", async () => {
    const janus = new FakeJanus();
    janus.room = ROOM;
    janus.roomToken = "another";
    const { wac, server, mediaRequests } = await loggedIn({ createJanusSocket: janus.factory });
    const joining = wac.conferences.join("cf1", { audio: true, video: true });
    joining.catch(() => {});
    await server.answer("ConferencesService.JoinConference", joined());
    await flush();
    await assert.rejects(joining, (error: { status?: string }) => error.status === "PERMISSION_DENIED");
    assert.equal(mediaRequests.length, 1);
    assert.deepEqual(server.link.last("ConferencesService.LeaveConference").params, { conferenceId: "cf1" });
    assert.deepEqual(wac.conferences.joined, []);
    assert.equal(janus.socket.closedByClient, true);
  });

  it("a join wac refuses fails before Janus; ids that are not JavaScript-safe are refused", async () => {
    const janus = new FakeJanus();
    const { wac, server } = await loggedIn({ createJanusSocket: janus.factory });
    const refused = wac.conferences.join("cf1", { audio: true, video: false });
    refused.catch(() => {});
    await settle();
    server.link.replyError(server.link.last("ConferencesService.JoinConference").id, 7, "not invited to this conference", "PERMISSION_DENIED");
    await assert.rejects(refused, (error: { status?: string }) => error.status === "PERMISSION_DENIED");
    assert.equal(janus.sockets.length, 0);

    const unsafe = wac.conferences.join("cf1", { audio: true, video: false });
    unsafe.catch(() => {});
    await server.answer("ConferencesService.JoinConference", joined({ room: "18446744073709551615" }));
    await assert.rejects(unsafe, (error: { status?: string }) => error.status === "INTERNAL");
    assert.equal(janus.sockets.length, 0);
  });

  it("create, invite, list and end are WAPI requests", async () => {
    const { wac, server } = await loggedIn();
    const creating = wac.conferences.create({ title: "standup", invitees: ["bob", "carol"], media: "AUDIO_VIDEO" });
    assert.deepEqual(await server.answer("ConferencesService.CreateConference", { conferenceId: "cf1" }), {
      title: "standup",
      invitees: ["bob", "carol"],
      media: "AUDIO_VIDEO",
    });
    assert.deepEqual(await creating, { conferenceId: "cf1" });
    const inviting = wac.conferences.invite("cf1", ["dave"]);
    assert.deepEqual(await server.answer("ConferencesService.InviteToConference", { conferenceId: "cf1" }), { conferenceId: "cf1", invitees: ["dave"] });
    await inviting;
    const listing = wac.conferences.list({ pageSize: 10 });
    assert.deepEqual(await server.answer("ConferencesService.ListConferences", { conferences: [{ conferenceId: "cf1" }] }), { pageSize: 10 });
    assert.deepEqual((await listing).conferences, [{ conferenceId: "cf1" }]);
    const ending = wac.conferences.end("cf1");
    assert.deepEqual(await server.answer("ConferencesService.EndConference", { conferenceId: "cf1", state: "ENDED" }), { conferenceId: "cf1" });
    assert.equal((await ending).state, "ENDED");
  });

  it("end() by its creator ends this device's room too, with who ended it", async () => {
    const { wac, conference, server } = await inRoom();
    const { ended } = record(conference);
    const ending = wac.conferences.end("cf1");
    await server.answer("ConferencesService.EndConference", { conferenceId: "cf1", state: "ENDED", endedBy: "alice" });
    await ending;
    assert.deepEqual(ended, [{ reason: "ended", endedBy: "alice" }]);
    assert.equal(server.link.requests("ConferencesService.LeaveConference").length, 0);
    assert.deepEqual(wac.conferences.joined, []);
  });

  it("logout leaves the rooms; a session revoked ends them with 'error'", async () => {
    const { wac, conference, server } = await inRoom();
    const { ended } = record(conference);
    const out = wac.logout();
    await flush();
    assert.deepEqual(server.link.last("ConferencesService.LeaveConference").params, { conferenceId: "cf1" });
    await server.answer("ConferencesService.LeaveConference", {});
    await server.answer("IdentityService.Logout", {});
    await out;
    assert.deepEqual(ended, [{ reason: "left" }]);

    const second = await inRoom();
    const { ended: revoked } = record(second.conference);
    second.server.event({ sessionRevoked: { sessionId: "s1", reason: "revoked" } });
    await flush();
    assert.equal(revoked[0]?.reason, "error");
    assert.equal(revoked[0]?.error?.status, "UNAUTHENTICATED");
    assert.equal(second.server.link.requests("ConferencesService.LeaveConference").length, 0);
  });

  it("Janus's URL: the path on the WAPI's scheme and host", () => {
    assert.equal(janusUrl("/janus", "wss://wac.example.com/wapi"), "wss://wac.example.com/janus");
    assert.equal(janusUrl("janus", "ws://127.0.0.1:8080/base/wapi"), "ws://127.0.0.1:8080/janus");
    assert.equal(janusUrl("wss://media.example.com/janus", "wss://wac.example.com/wapi"), "wss://media.example.com/janus");
  });
});

type LoggedIn = Awaited<ReturnType<typeof loggedIn>>;

/** alice joins cf1 again on the same fake Janus (after the last conference ended). */
async function inRoomAgain(janus: FakeJanus, server: LoggedIn["server"], wac: LoggedIn["wac"]) {
  janus.remote.set(BOB, "bob");
  const joining = wac.conferences.join("cf1", { audio: true, video: true });
  await server.answer("ConferencesService.JoinConference", joined());
  await flush();
  const conference = await joining;
  await flush();
  return conference;
}
