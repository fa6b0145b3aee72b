/**
 * Conference: this device in a conference's room on Janus (the VideoRoom
 * plugin, an SFU), behind an API in the style of Call. wac admits the
 * device (JoinConference: the room, a Janus token, the feed id to publish
 * with, a room token, ICE servers); the rest is between the SDK and Janus:
 *
 *   wac   JoinConference                       → room, token, feedId, roomToken, iceServers
 *   Janus create, attach (publisher handle)
 *         join {ptype: publisher, room, id: feedId, display, token: roomToken}
 *                                              → joined {private_id, publishers}
 *         configure {audio, video} + offer     → configured + answer
 *   for each remote publisher (in joined, and in later events' publishers):
 *         attach, join {ptype: subscriber, streams: [{feed}], private_id}
 *                                              → attached + offer
 *         start + answer                       → started
 *   remote publishers go on unpublished, leaving and kicked events; this
 *   device is out on its own "kicked" and on the room's "destroyed".
 *
 * Each remote participant has its own subscriber handle and peer
 * connection, and one MediaStream. Participants are named by wac: a feed
 * id wac handed out is a username; the display name a feed announces (the
 * browser's own word) is the fallback until wac's event arrives.
 *
 * If Janus's WebSocket drops, the conference joins again once (a fresh
 * JoinConference for fresh tokens, then the room, with new peer
 * connections); if that fails it ends with reason "error". So does a device
 * whose wac connection was down past the grace period, when it comes back
 * and hears that wac counted it out (CONNECTION_LOST). A session refresh
 * fetches a fresh Janus token the same way (JoinConference again from the
 * same device keeps its place): the token expires with the access token.
 */
import type { Clock } from "../clock.js";
import { Emitter } from "../emitter.js";
import { Status, WacError, toWacError } from "../errors.js";
import type {
  Conference as ConferenceInfo,
  ConferenceParticipantLeft_Reason,
  Event as WacEvent,
  JoinConferenceResponse,
} from "../gen/wac.js";
import type { Requester } from "../requester.js";
import type { MediaKind } from "../calls/call.js";
import type { WebRtcEnvironment } from "../calls/webrtc.js";
import { type JanusHandle, JanusSession, type JanusSocketFactory, type Jsep, type PluginMessage, VIDEOROOM } from "./janus.js";

export type ConferenceState = "joining" | "joined" | "reconnecting" | "ended";

/**
 * Why this device is out of the room: it left; the conference ended (its
 * creator or an operator ended it, or its room is gone); wac took it out
 * (an operator's kick, its session's end, or a join from another device of
 * the same user); or the room could not be reached.
 */
export type ConferenceEndReason = "left" | "ended" | "kicked" | "error";

export interface ConferenceEndedInfo {
  reason: ConferenceEndReason;
  /** Who ended the conference (reason "ended", when wac said): its creator or an operator. */
  endedBy?: string;
  /** wac's reason for taking this device out (reason "kicked", when wac said): KICKED, MOVED, SESSION_ENDED, CONNECTION_LOST. */
  leftReason?: ConferenceParticipantLeft_Reason;
  /** What failed (reason "error"). */
  error?: WacError;
}

export interface ConferenceJoinOptions {
  /** Send audio: true, or getUserMedia constraints (default true). */
  audio?: boolean | MediaTrackConstraints;
  /** Send video: true, or constraints (default: whether the conference is AUDIO_VIDEO). */
  video?: boolean | MediaTrackConstraints;
  /** Publish this stream instead of calling getUserMedia (it stays the application's to stop). */
  stream?: MediaStream;
}

/** A remote participant in the room. */
export interface RemoteParticipant {
  /** The participant's wac username (the feed's display name until wac named it). */
  readonly username: string;
  /** Its publisher id in the room. */
  readonly feedId: number;
  /** The display name its feed announced. */
  readonly display: string;
  /** Its audio and video, once it publishes and they arrive; a new stream on each new track. */
  readonly stream: MediaStream | null;
  /** The peer connection receiving it (getStats), while subscribed. */
  readonly peerConnection: RTCPeerConnection | null;
}

export interface ConferenceEvents {
  state: ConferenceState;
  /** A participant entered the room (or began publishing). */
  participantJoined: RemoteParticipant;
  /** A participant left the room (or stopped publishing). */
  participantLeft: RemoteParticipant;
  /** A participant's `stream` is new: put it in its video element. */
  participantStream: RemoteParticipant;
  /** This device began (true) or stopped (false) sharing its screen; the browser's own "stop sharing" included. */
  screenShare: boolean;
  /** This device is out of the room. */
  ended: ConferenceEndedInfo;
  /** wac's record of the conference changed. */
  updated: ConferenceInfo;
  /** Something failed that no caller awaits (a subscription, a keepalive). */
  error: WacError;
}

/** What a Conference needs from the Wac that owns it. */
export interface ConferenceHost {
  request: Requester;
  clock: Clock;
  webrtc(): WebRtcEnvironment;
  /** Janus's WebSocket URL for the path wac gave: ws(s)://<wac's host><path>. */
  janusUrl(path: string): string;
  createSocket: JanusSocketFactory;
  random?: () => number;
  /** The logged-in username: the display name in the room, and to recognise events about this device. */
  username(): string | undefined;
  /** The conference ended: stop routing events to it. */
  forget(conference: Conference): void;
  /** Whether wac's connection is up (its events reach this device now). */
  connected(): boolean;
}

/** How long leave() waits for Janus to destroy the session. */
const LEAVE_TIMEOUT_MS = 3_000;
/** How long a kick by Janus waits for wac's word of why before it ends the conference. */
const KICK_WORD_MS = 2_000;

interface Participant {
  username: string;
  feedId: number;
  display: string;
  stream: MediaStream | null;
  peerConnection: RTCPeerConnection | null;
}

/** One subscription: a handle and peer connection receiving one remote publisher. */
interface Subscription {
  participant: Participant;
  handle: JanusHandle | null;
  pc: RTCPeerConnection | null;
  /** Our candidates, until Janus has our answer. */
  localCandidates: Array<RTCIceCandidateInit | null> | null;
  /** Janus's candidates, until its offer is set. */
  remoteCandidates: Array<RTCIceCandidateInit | null>;
  /** The publisher's streams (its mids) subscribed to. */
  mids: Set<string>;
  /** Offers answered, and updates made, one at a time. */
  chain: Promise<void>;
  closed: boolean;
}

interface Publisher {
  handle: JanusHandle;
  pc: RTCPeerConnection | null;
  localCandidates: Array<RTCIceCandidateInit | null> | null;
  remoteCandidates: Array<RTCIceCandidateInit | null>;
  videoSender: RTCRtpSender | null;
}

export class Conference extends Emitter<ConferenceEvents> {
  readonly id: string;
  /** wac's record of the conference, as last heard. */
  info: ConferenceInfo;
  /** The camera and microphone this device publishes. */
  localStream: MediaStream | null = null;
  /** The screen being shared instead of the camera, while it is. */
  screenStream: MediaStream | null = null;

  private current: ConferenceState = "joining";
  private endInfo: ConferenceEndedInfo | null = null;
  private readonly host: ConferenceHost;
  private ownsStream = false;
  private janus: JanusSession | null = null;
  private publisher: Publisher | null = null;
  private room = 0;
  private feedId = 0;
  private privateId = 0;
  private roomToken = "";
  /** The Janus token every request carries. */
  private token = "";
  /** Set while a kick by Janus waits for wac's word (onKicked). */
  private kickTimer: unknown = null;
  private janusPath = "";
  private iceServers: RTCIceServer[] = [];
  private readonly byFeed = new Map<number, Participant>();
  private readonly byName = new Map<string, Participant>();
  private readonly subscriptions = new Map<number, Subscription>();
  /** wac's names of feeds: feed id → username. */
  private readonly names = new Map<number, string>();
  /** Bumped on every (re)entry into the room: work of an earlier one is dropped. */
  private generation = 0;
  /** wac counts this device in the room: leaving must tell it. */
  private inWac = false;
  private leaving = false;

  /** @internal Made by wac.conferences.join(); not by applications. */
  constructor(host: ConferenceHost, conferenceId: string) {
    super();
    this.host = host;
    this.id = conferenceId;
    this.info = { conferenceId };
  }

  get state(): ConferenceState {
    return this.current;
  }

  /** Why this device is out of the room, once it is. */
  get ended(): ConferenceEndedInfo | null {
    return this.endInfo;
  }

  /** The remote participants in the room, by username. */
  get participants(): ReadonlyMap<string, RemoteParticipant> {
    return this.byName;
  }

  /** The peer connection publishing this device's media (getStats), while it publishes. */
  get peerConnection(): RTCPeerConnection | null {
    return this.publisher?.pc ?? null;
  }

  /** This device's publisher id in the room. */
  get feed(): number {
    return this.feedId;
  }

  /** Whether every local track of the kind is disabled (`isMuted("video")`: the camera is off). */
  isMuted(kind: MediaKind = "audio"): boolean {
    const tracks = this.localStream?.getTracks().filter((t) => t.kind === kind) ?? [];
    return tracks.length > 0 && tracks.every((t) => !t.enabled);
  }

  /** Mutes (true) or unmutes (false) the microphone; the others receive silence. */
  mute(on = true): void {
    this.enable("audio", !on);
  }

  /** Turns the camera off (true) or on (false); the others receive black frames. */
  cameraOff(on = true): void {
    this.enable("video", !on);
  }

  /** Whether the screen is being shared. */
  get screenSharing(): boolean {
    return this.screenStream !== null;
  }

  /**
   * Shares the screen (getDisplayMedia) instead of the camera: the video
   * sender's track is replaced, or, when this device published no video, a
   * video stream is added and Janus renegotiates. The browser's own "stop
   * sharing" ends it as stopScreenShare() does.
   */
  async shareScreen(options: DisplayMediaStreamOptions = { video: true, audio: false }): Promise<MediaStream> {
    if (this.screenStream) return this.screenStream;
    if (this.current !== "joined") throw new WacError(Status.FAILED_PRECONDITION, `cannot share the screen in a conference that is ${this.current}`);
    const env = this.host.webrtc();
    if (!env.getDisplayMedia) throw new WacError(Status.FAILED_PRECONDITION, "screen sharing is not available here");
    let stream: MediaStream;
    try {
      stream = await env.getDisplayMedia(options);
    } catch (error) {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot share the screen: ${describe(error)}`, { cause: error });
    }
    const track = stream.getTracks().find((t) => t.kind === "video");
    if (!track || this.current !== "joined" || this.screenStream) {
      for (const t of stream.getTracks()) t.stop();
      if (this.screenStream) return this.screenStream;
      throw new WacError(track ? Status.FAILED_PRECONDITION : Status.INVALID_ARGUMENT, track ? "the conference is over" : "the shared screen has no video");
    }
    this.screenStream = stream;
    track.addEventListener?.("ended", () => {
      if (this.screenStream === stream) void this.stopScreenShare().catch((error: unknown) => this.emit("error", toWacError(error)));
    });
    try {
      await this.sendVideo(track, stream);
    } catch (error) {
      if (this.screenStream === stream) this.screenStream = null;
      for (const t of stream.getTracks()) t.stop();
      throw toWacError(error);
    }
    if (this.screenStream === stream) this.emit("screenShare", true);
    return stream;
  }

  /** Stops sharing the screen: the camera's video again (or none, if there was no camera). */
  async stopScreenShare(): Promise<void> {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    for (const track of stream.getTracks()) track.stop();
    this.emit("screenShare", false);
    if (this.current !== "joined") return;
    const camera = this.localStream?.getTracks().find((t) => t.kind === "video") ?? null;
    const sender = this.publisher?.videoSender;
    if (sender) await sender.replaceTrack(camera);
  }

  /**
   * Leaves the conference: LeaveConference to wac (the others are told),
   * then "leave" to the room and the Janus session destroyed. The media
   * stops and `ended` ("left") fires at once; resolves when Janus and wac
   * answered. Rejects only if wac could not be told (UNAVAILABLE, say): the
   * device is out of the room all the same.
   */
  async leave(): Promise<void> {
    if (this.current === "ended" || this.leaving) return;
    this.leaving = true;
    const told = this.inWac
      ? this.host.request("ConferencesService.LeaveConference", { conferenceId: this.id }).then(
          (info) => this.update(info),
          (error: unknown) => ignoreGone(error),
        )
      : Promise.resolve();
    told.catch(() => {});
    const janus = this.janus;
    const publisher = this.publisher;
    let destroyed: Promise<void> = Promise.resolve();
    if (janus?.isOpen) {
      if (publisher) void publisher.handle.message({ request: "leave" }).catch(() => {});
      destroyed = janus.destroy(LEAVE_TIMEOUT_MS).catch(() => {});
    } else janus?.close();
    this.janus = null; // closed by destroy(), not by the end
    this.end({ reason: "left" });
    await destroyed;
    await told;
  }

  // ---- from the Wac ----

  /** @internal Joins: wac first, then the room, publishing `options`' media. */
  async start(options: ConferenceJoinOptions): Promise<void> {
    try {
      const env = this.host.webrtc();
      const decided = options.stream !== undefined || options.video !== undefined;
      // Asked at once when the options say what to ask: the prompt overlaps JoinConference.
      const early = decided ? this.getLocalStream(env, options, false) : null;
      early?.catch(() => {});
      let joined: JoinConferenceResponse;
      try {
        joined = await this.host.request("ConferencesService.JoinConference", { conferenceId: this.id });
      } catch (error) {
        if (early) early.then((stream) => this.releaseStream(stream, options), () => {});
        throw error;
      }
      this.inWac = true;
      if (this.current === "ended") {
        // Left while wac was answering: wac counts this device in, tell it otherwise.
        void this.host.request("ConferencesService.LeaveConference", { conferenceId: this.id }).catch(() => {});
      }
      this.checkNotEnded();
      this.adopt(joined, true);
      const media = early ?? this.getLocalStream(env, options, this.info.media === "AUDIO_VIDEO");
      const entering = this.enterRoom();
      const [stream, room] = await Promise.allSettled([media, entering]);
      if (stream.status === "fulfilled") {
        this.localStream = stream.value;
        this.ownsStream = Boolean(stream.value) && stream.value !== options.stream;
      }
      if (stream.status === "rejected") throw stream.reason;
      if (room.status === "rejected") throw room.reason;
      this.checkNotEnded();
      await this.publish(env);
      this.checkNotEnded();
      this.setState("joined");
    } catch (error) {
      const wacError = toWacError(error);
      if (this.current !== "ended") this.end({ reason: "error", error: wacError });
      // The camera may have come after the end released the media.
      else if (this.ownsStream) for (const track of this.localStream?.getTracks() ?? []) track.stop();
      throw wacError;
    }
  }

  /** @internal An event of this conference from wac's event stream. */
  handleEvent(event: WacEvent): void {
    const me = this.host.username();
    if (event.conferenceParticipantJoined) {
      this.update(event.conferenceParticipantJoined.conference);
    } else if (event.conferenceParticipantLeft) {
      const left = event.conferenceParticipantLeft;
      this.update(left.conference);
      const mine = left.username !== undefined && left.username === me && !this.leaving;
      if (mine) this.clearKickTimer(); // wac's word, which a kick by Janus waits for
      if (mine && left.reason === "CONNECTION_LOST") {
        // wac counted this device out while its connection was down past
        // the grace period; the event reached it, so it is back: join again
        // (unless a lost Janus socket's rejoin is under way already).
        if (this.current === "joined") {
          void this.rejoin(new WacError(Status.UNAVAILABLE, "wac counted this device out while its connection was down"));
        }
      } else if (mine && this.current !== "joining") {
        // wac took this device out (a kick, the session's end, another device's join).
        this.end({ reason: "kicked", ...(left.reason ? { leftReason: left.reason } : {}) });
      }
    } else if (event.conferenceEnded) {
      const info = event.conferenceEnded.conference;
      this.update(info);
      if (!this.leaving) this.end({ reason: "ended", ...(info?.endedBy ? { endedBy: info.endedBy } : {}) });
    }
  }

  /** @internal The session's tokens were refreshed: a fresh Janus token (it expires with the access token). */
  refreshToken(): void {
    if (this.current !== "joined" || this.leaving) return;
    this.host.request("ConferencesService.JoinConference", { conferenceId: this.id }).then(
      (joined) => {
        if (this.current !== "ended") this.adopt(joined, false);
      },
      (error: unknown) => {
        if (this.current !== "ended") this.emit("error", toWacError(error));
      },
    );
  }

  /** @internal Ends the conference here without telling wac (the session is over). */
  terminate(error: WacError): void {
    this.inWac = false;
    this.end({ reason: "error", error });
  }

  /** @internal Ended by wac's EndConference answer. */
  handleEnded(info: ConferenceInfo): void {
    this.update(info);
    this.end({ reason: "ended", ...(info.endedBy ? { endedBy: info.endedBy } : {}) });
  }

  // ---- the room ----

  /**
   * What wac said: the room, tokens and names. uint64s arrive as strings
   * and go to Janus as numbers. A refresh (`entering` false) takes the
   * token alone: the room and feed are those the device is in.
   */
  private adopt(joined: JoinConferenceResponse, entering: boolean): void {
    if (entering) {
      this.room = safeInteger(joined.room, "room");
      this.feedId = safeInteger(joined.feedId, "feedId");
      this.janusPath = joined.janusPath || "/janus";
      this.roomToken = joined.roomToken ?? "";
    }
    this.iceServers = (joined.iceServers ?? []).map((server) => ({
      urls: server.urls ?? [],
      ...(server.username ? { username: server.username } : {}),
      ...(server.credential ? { credential: server.credential } : {}),
    }));
    this.token = joined.token ?? "";
    if (this.janus) this.janus.token = this.token;
    this.update(joined.conference);
  }

  /** A Janus session, a publisher handle in the room; then subscriptions to the publishers there. */
  private async enterRoom(previousSession?: number): Promise<void> {
    const generation = ++this.generation;
    const janus = new JanusSession({
      url: this.host.janusUrl(this.janusPath),
      token: this.token,
      createSocket: this.host.createSocket,
      clock: this.host.clock,
      ...(this.host.random ? { random: this.host.random } : {}),
    });
    this.janus = janus;
    janus.on("closed", (error) => {
      if (this.janus === janus) this.onJanusLost(error);
    });
    janus.on("error", (error) => {
      if (this.janus === janus) this.emit("error", error);
    });
    await janus.connect();
    if (previousSession) await janus.destroyOther(previousSession).catch(() => {});
    await janus.create();
    const handle = await janus.attach(VIDEOROOM);
    const publisher: Publisher = { handle, pc: null, localCandidates: [], remoteCandidates: [], videoSender: null };
    this.publisher = publisher;
    handle.on("event", (message) => {
      if (this.generation === generation) this.onPublisherEvent(message);
    });
    handle.on("trickle", (candidate) => {
      if (this.publisher === publisher) void this.addRemoteCandidate(publisher, candidate);
    });
    handle.on("hangup", (reason) => {
      // Janus closed our publisher's peer connection: unless we are on our way out, join again.
      if (this.publisher === publisher && this.current === "joined" && !this.leaving) {
        this.onJanusLost(new WacError(Status.UNAVAILABLE, `the media server hung up (${reason || "no reason"})`));
      }
    });
    const username = this.host.username() ?? "";
    const { data } = await handle.message({
      request: "join",
      ptype: "publisher",
      room: this.room,
      id: this.feedId,
      display: username,
      token: this.roomToken,
    });
    this.checkNotEnded();
    if (typeof data.private_id !== "number") throw new WacError(Status.INTERNAL, "the media server gave no private id");
    this.privateId = data.private_id;
    const present = new Set<number>();
    for (const attendee of records(data.attendees)) {
      const id = numberOf(attendee.id);
      if (id !== null && id !== this.feedId) present.add(this.sawParticipant(id, stringOf(attendee.display)).feedId);
    }
    for (const publisher of records(data.publishers)) {
      const id = numberOf(publisher.id);
      if (id !== null && id !== this.feedId) present.add(this.sawPublisher(id, stringOf(publisher.display), publisher.streams).feedId);
    }
    // After a rejoin: whoever left meanwhile is gone.
    for (const participant of [...this.byFeed.values()]) if (!present.has(participant.feedId)) this.removeParticipant(participant);
  }

  /** Publishes the local media on a new peer connection: configure with our offer, Janus's answer. */
  private async publish(env: WebRtcEnvironment): Promise<void> {
    const publisher = this.publisher!;
    const stream = this.localStream;
    const screen = this.screenStream?.getTracks().find((t) => t.kind === "video") ?? null;
    const tracks: Array<[MediaStreamTrack, MediaStream]> = [];
    for (const track of stream?.getTracks() ?? []) {
      if (track.kind === "video" && screen) continue;
      tracks.push([track, stream!]);
    }
    if (screen) tracks.push([screen, this.screenStream!]);
    if (tracks.length === 0) return; // in the room to listen only
    const pc = this.newPeerConnection(env, publisher);
    publisher.pc = pc;
    for (const [track, owner] of tracks) {
      const sender = pc.addTrack(track, owner);
      if (track.kind === "video") publisher.videoSender = sender;
    }
    for (const transceiver of pc.getTransceivers()) transceiver.direction = "sendonly";
    await this.negotiatePublisher(publisher, pc);
  }

  /** An offer from the publisher's peer connection, configure, and Janus's answer. */
  private async negotiatePublisher(publisher: Publisher, pc: RTCPeerConnection): Promise<void> {
    await pc.setLocalDescription(await pc.createOffer());
    const kinds = pc.getTransceivers().map((t) => t.sender.track?.kind ?? (t as { kind?: string }).kind ?? t.receiver?.track?.kind);
    const { jsep } = await publisher.handle.message(
      { request: "configure", audio: kinds.includes("audio"), video: kinds.includes("video") },
      { type: "offer", sdp: pc.localDescription?.sdp ?? "" },
    );
    this.flushLocalCandidates(publisher);
    if (jsep?.type !== "answer") throw new WacError(Status.INTERNAL, "the media server did not answer the offer");
    await pc.setRemoteDescription({ type: "answer", sdp: jsep.sdp });
    await this.flushRemoteCandidates(publisher, pc);
  }

  /** Video to send now: replaces the video sender's track, or adds one and renegotiates. */
  private async sendVideo(track: MediaStreamTrack, stream: MediaStream): Promise<void> {
    const publisher = this.publisher;
    if (!publisher) throw new WacError(Status.FAILED_PRECONDITION, "not in the room");
    if (publisher.videoSender) {
      await publisher.videoSender.replaceTrack(track);
      return;
    }
    const env = this.host.webrtc();
    let pc = publisher.pc;
    if (!pc) {
      pc = this.newPeerConnection(env, publisher);
      publisher.pc = pc;
    }
    publisher.videoSender = pc.addTrack(track, stream);
    for (const transceiver of pc.getTransceivers()) if (transceiver.sender === publisher.videoSender) transceiver.direction = "sendonly";
    await this.negotiatePublisher(publisher, pc);
  }

  private newPeerConnection(env: WebRtcEnvironment, owner: { handle: JanusHandle | null; localCandidates: Array<RTCIceCandidateInit | null> | null }): RTCPeerConnection {
    const pc = new env.RTCPeerConnection({ iceServers: this.iceServers });
    pc.onicecandidate = (event) => {
      const candidate = event.candidate;
      if (candidate && !candidate.candidate) return; // an end-of-generation marker; null follows
      const init = candidate ? (candidate.toJSON ? candidate.toJSON() : (candidate as RTCIceCandidateInit)) : null;
      if (owner.localCandidates) owner.localCandidates.push(init);
      else this.sendCandidate(owner.handle, init);
    };
    return pc;
  }

  private sendCandidate(handle: JanusHandle | null, candidate: RTCIceCandidateInit | null): void {
    handle?.trickle(candidate).catch((error: unknown) => {
      if (this.current !== "ended" && this.janus?.isOpen) this.emit("error", toWacError(error));
    });
  }

  /** Janus has our SDP: the candidates held until then go out. */
  private flushLocalCandidates(owner: { handle: JanusHandle | null; localCandidates: Array<RTCIceCandidateInit | null> | null }): void {
    const held = owner.localCandidates;
    owner.localCandidates = null;
    for (const candidate of held ?? []) this.sendCandidate(owner.handle, candidate);
  }

  private async addRemoteCandidate(owner: { pc: RTCPeerConnection | null; remoteCandidates: Array<RTCIceCandidateInit | null> }, candidate: RTCIceCandidateInit | null): Promise<void> {
    const pc = owner.pc;
    if (!pc || !pc.remoteDescription) {
      owner.remoteCandidates.push(candidate);
      return;
    }
    try {
      await (candidate ? pc.addIceCandidate(candidate) : pc.addIceCandidate());
    } catch (error) {
      if (candidate && this.current !== "ended") this.emit("error", toWacError(error, Status.INVALID_ARGUMENT));
    }
  }

  private async flushRemoteCandidates(owner: { pc: RTCPeerConnection | null; remoteCandidates: Array<RTCIceCandidateInit | null> }, pc: RTCPeerConnection): Promise<void> {
    const held = owner.remoteCandidates;
    owner.remoteCandidates = [];
    for (const candidate of held) {
      try {
        await (candidate ? pc.addIceCandidate(candidate) : pc.addIceCandidate());
      } catch (error) {
        if (candidate && this.current !== "ended") this.emit("error", toWacError(error, Status.INVALID_ARGUMENT));
      }
    }
  }

  private onPublisherEvent({ data }: PluginMessage): void {
    if (this.current === "ended" || this.leaving) return;
    if (data.videoroom === "destroyed") {
      this.end({ reason: "ended" });
      return;
    }
    if (data.videoroom !== "event") return;
    if (data.error_code !== undefined) {
      this.emit("error", new WacError(Status.INTERNAL, `media server: ${String(data.error ?? "error")} (${String(data.error_code)})`));
      return;
    }
    if (data.leaving === "ok" && data.reason === "kicked") {
      this.onKicked();
      return;
    }
    const joining = data.joining as Record<string, unknown> | undefined;
    const joiningId = numberOf(joining?.id);
    if (joiningId !== null && joiningId !== this.feedId) this.sawParticipant(joiningId, stringOf(joining?.display));
    for (const publisher of records(data.publishers)) {
      const id = numberOf(publisher.id);
      if (id !== null && id !== this.feedId) this.sawPublisher(id, stringOf(publisher.display), publisher.streams);
    }
    for (const key of ["unpublished", "leaving", "kicked"]) {
      const id = numberOf(data[key]);
      if (id === null || id === this.feedId) continue;
      const participant = this.byFeed.get(id);
      if (participant) this.removeParticipant(participant);
    }
  }

  /** A participant in the room (an attendee, or a publisher): known from now on. */
  private sawParticipant(feedId: number, display: string): Participant {
    const known = this.byFeed.get(feedId);
    if (known) return known;
    const username = this.names.get(feedId) ?? (display || `feed-${feedId}`);
    const previous = this.byName.get(username);
    // The same user from another device: its new feed takes the old one's place.
    if (previous) this.removeParticipant(previous);
    const participant: Participant = { username, feedId, display, stream: null, peerConnection: null };
    this.byFeed.set(feedId, participant);
    this.byName.set(username, participant);
    this.emit("participantJoined", participant);
    return participant;
  }

  /**
   * A publisher, new or known. A known one that publishes streams it did
   * not before (an audio-only participant sharing its screen) renegotiated
   * with Janus: its subscription asks for them ("update"), and Janus offers
   * them.
   */
  private sawPublisher(feedId: number, display: string, streams: unknown): Participant {
    const participant = this.sawParticipant(feedId, display);
    const subscription = this.subscriptions.get(feedId);
    if (!subscription) void this.subscribe(participant);
    else if (subscription.handle && subscription.mids.size > 0) {
      const added = activeMids(streams).filter((mid) => !subscription.mids.has(mid));
      if (added.length) void this.updateSubscription(subscription, added);
    }
    return participant;
  }

  private removeParticipant(participant: Participant): void {
    if (this.byFeed.get(participant.feedId) !== participant) return;
    this.byFeed.delete(participant.feedId);
    if (this.byName.get(participant.username) === participant) this.byName.delete(participant.username);
    this.unsubscribe(participant.feedId);
    this.emit("participantLeft", participant);
  }

  /** A subscriber handle for one publisher: join with its feed and our private id, answer Janus's offer. */
  private async subscribe(participant: Participant): Promise<void> {
    const janus = this.janus;
    if (!janus) return;
    const generation = this.generation;
    const subscription: Subscription = {
      participant,
      handle: null,
      pc: null,
      localCandidates: [],
      remoteCandidates: [],
      mids: new Set(),
      chain: Promise.resolve(),
      closed: false,
    };
    this.subscriptions.set(participant.feedId, subscription);
    const stale = () => subscription.closed || generation !== this.generation || this.current === "ended";
    try {
      const handle = await janus.attach(VIDEOROOM);
      if (stale()) {
        void handle.detach().catch(() => {});
        return;
      }
      subscription.handle = handle;
      handle.on("event", ({ data, jsep }) => {
        if (stale()) return;
        if (data.error_code !== undefined) this.emit("error", new WacError(Status.INTERNAL, `media server: ${String(data.error ?? "error")} (${String(data.error_code)})`));
        // A renegotiation (a stream of the publisher went away): answer it too.
        if (jsep?.type === "offer") this.enqueue(subscription, () => this.answerSubscription(subscription, jsep)).catch(this.reportFor(subscription));
      });
      handle.on("trickle", (candidate) => {
        if (!stale()) void this.addRemoteCandidate(subscription, candidate);
      });
      const { data, jsep } = await handle.message({
        request: "join",
        ptype: "subscriber",
        room: this.room,
        streams: [{ feed: participant.feedId }],
        private_id: this.privateId,
      });
      if (stale()) return;
      if (jsep?.type !== "offer") throw new WacError(Status.INTERNAL, "the media server sent no offer for the subscription");
      for (const stream of records(data.streams)) if (typeof stream.feed_mid === "string") subscription.mids.add(stream.feed_mid);
      await this.enqueue(subscription, () => this.answerSubscription(subscription, jsep));
    } catch (error) {
      if (stale()) return;
      const wacError = toWacError(error);
      // NOT_FOUND: the publisher left meanwhile; its unpublished event says so.
      if (wacError.code !== Status.NOT_FOUND) this.emit("error", wacError);
      this.unsubscribe(participant.feedId);
    }
  }

  /** Runs a step of a subscription after the earlier ones (a failed one does not stop the next). */
  private enqueue(subscription: Subscription, step: () => Promise<void>): Promise<void> {
    const result = subscription.chain.then(() => (subscription.closed ? undefined : step()));
    subscription.chain = result.catch(() => {});
    return result;
  }

  /** Reports a subscription's failure that no caller awaits, unless it is over anyway. */
  private reportFor(subscription: Subscription): (error: unknown) => void {
    return (error) => {
      if (!subscription.closed && this.current !== "ended") this.emit("error", toWacError(error));
    };
  }

  /** Answers an offer of a subscription (the first, and any renegotiation). */
  private async answerSubscription(subscription: Subscription, offer: Jsep): Promise<void> {
    if (subscription.closed) return;
    const env = this.host.webrtc();
    let pc = subscription.pc;
    if (!pc) {
      pc = this.newPeerConnection(env, subscription);
      subscription.pc = pc;
      subscription.participant.peerConnection = pc;
      pc.ontrack = (event) => {
        if (!subscription.closed) this.onRemoteTrack(env, subscription.participant, event.track);
      };
    }
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await this.flushRemoteCandidates(subscription, pc);
    await pc.setLocalDescription(await pc.createAnswer());
    if (subscription.closed || !subscription.handle) return;
    await subscription.handle.message({ request: "start" }, { type: "answer", sdp: pc.localDescription?.sdp ?? "" });
    this.flushLocalCandidates(subscription);
  }

  /** Subscribes to streams a publisher added; Janus answers with a new offer. */
  private updateSubscription(subscription: Subscription, mids: string[]): Promise<void> {
    for (const mid of mids) subscription.mids.add(mid);
    const feed = subscription.participant.feedId;
    return this.enqueue(subscription, async () => {
      const { jsep } = await subscription.handle!.message({ request: "update", subscribe: mids.map((mid) => ({ feed, mid })) });
      if (jsep?.type === "offer") await this.answerSubscription(subscription, jsep);
    }).catch(this.reportFor(subscription));
  }

  /** A remote track: the participant's stream is made again with it, so that players pick it up. */
  private onRemoteTrack(env: WebRtcEnvironment, participant: Participant, track: MediaStreamTrack): void {
    const tracks = participant.stream?.getTracks() ?? [];
    if (tracks.includes(track)) return;
    const stream = env.createMediaStream();
    for (const t of [...tracks.filter((t) => t.readyState !== "ended"), track]) stream.addTrack(t);
    participant.stream = stream;
    this.emit("participantStream", participant);
  }

  private unsubscribe(feedId: number): void {
    const subscription = this.subscriptions.get(feedId);
    if (!subscription) return;
    this.subscriptions.delete(feedId);
    this.closeSubscription(subscription, true);
  }

  private closeSubscription(subscription: Subscription, detach: boolean): void {
    subscription.closed = true;
    const pc = subscription.pc;
    if (pc) {
      pc.onicecandidate = null;
      pc.ontrack = null;
      pc.close();
    }
    if (subscription.participant.peerConnection === pc) subscription.participant.peerConnection = null;
    if (detach && subscription.handle) void subscription.handle.detach().catch(() => {});
  }

  // ---- taken out ----

  /**
   * Janus kicked this device's feed. Only wac kicks, and wac says why in
   * its conferenceParticipantLeft, which may come before or after Janus's
   * word: an operator's KICKED, MOVED, SESSION_ENDED end the conference,
   * CONNECTION_LOST (wac counted this device out while its connection was
   * down) joins again. While wac's connection is down the word comes on
   * reconnection: join again now (the request waits for the connection; a
   * replayed KICKED ends the rejoin). While it is up, wait for the word a
   * moment, then end as kicked.
   */
  private onKicked(): void {
    if (this.current !== "joined") return; // reconnecting: the rejoin stands; joining: start() fails
    if (!this.host.connected()) {
      this.onJanusLost(new WacError(Status.UNAVAILABLE, "the media server kicked this device while wac's connection was down"));
      return;
    }
    if (this.kickTimer !== null) return;
    this.kickTimer = this.host.clock.setTimeout(() => {
      this.kickTimer = null;
      if (this.current === "joined") this.end({ reason: "kicked" });
    }, KICK_WORD_MS);
  }

  private clearKickTimer(): void {
    if (this.kickTimer === null) return;
    this.host.clock.clearTimeout(this.kickTimer);
    this.kickTimer = null;
  }

  // ---- losing Janus ----

  /** Janus's socket dropped (or it hung up on our publisher): join again, once. */
  private onJanusLost(error: WacError): void {
    if (this.current === "ended" || this.leaving) return;
    if (this.current !== "joined") return; // joining: start() fails with the requests in flight
    void this.rejoin(error);
  }

  private async rejoin(cause: WacError): Promise<void> {
    this.clearKickTimer();
    this.setState("reconnecting");
    const previous = this.janus;
    const previousSession = previous?.id;
    this.leaveRoomLocally();
    previous?.close();
    this.janus = null;
    try {
      const joined = await this.host.request("ConferencesService.JoinConference", { conferenceId: this.id });
      if (this.current === "ended") {
        // Left, or taken out, while wac was answering, and the join may have
        // come after: out again, or wac would count this device in.
        void this.host.request("ConferencesService.LeaveConference", { conferenceId: this.id }).catch(() => {});
      }
      this.checkNotEnded();
      this.adopt(joined, true);
      await this.enterRoom(previousSession);
      this.checkNotEnded();
      await this.publish(this.host.webrtc());
      this.checkNotEnded();
      this.setState("joined");
    } catch (error) {
      if (this.current === "ended") return;
      const wacError = toWacError(error);
      this.end({
        reason: "error",
        error: new WacError(wacError.code, `lost the media server (${cause.message}) and could not join again: ${wacError.message}`, { cause: wacError }),
      });
    }
  }

  /** Closes the peer connections of the room we were in; the participants stay, without streams, until the rejoin says. */
  private leaveRoomLocally(): void {
    this.generation += 1;
    for (const subscription of this.subscriptions.values()) this.closeSubscription(subscription, false);
    this.subscriptions.clear();
    for (const participant of this.byFeed.values()) {
      participant.stream = null;
      participant.peerConnection = null;
    }
    const pc = this.publisher?.pc;
    if (pc) {
      pc.onicecandidate = null;
      pc.close();
    }
    this.publisher = null;
  }

  // ---- media ----

  private async getLocalStream(env: WebRtcEnvironment, options: ConferenceJoinOptions, videoByDefault: boolean): Promise<MediaStream | null> {
    if (options.stream) return options.stream;
    const audio = options.audio ?? true;
    const video = options.video ?? videoByDefault;
    if (!audio && !video) return null;
    try {
      return await env.getUserMedia({ audio, video });
    } catch (error) {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot use the microphone or camera: ${describe(error)}`, { cause: error });
    }
  }

  private releaseStream(stream: MediaStream | null, options: ConferenceJoinOptions): void {
    if (stream && stream !== options.stream) for (const track of stream.getTracks()) track.stop();
  }

  private enable(kind: MediaKind, enabled: boolean): void {
    for (const track of this.localStream?.getTracks() ?? []) if (track.kind === kind) track.enabled = enabled;
  }

  // ---- state ----

  private update(info: ConferenceInfo | undefined): void {
    if (!info) return;
    this.info = { ...this.info, ...info };
    for (const participant of info.participants ?? []) {
      const feedId = numberOf(participant.feedId);
      if (feedId === null || !participant.username) continue;
      this.names.set(feedId, participant.username);
      const known = this.byFeed.get(feedId);
      if (known && known.username !== participant.username) {
        // Named by its display until now: wac's name wins.
        if (this.byName.get(known.username) === known) this.byName.delete(known.username);
        known.username = participant.username;
        this.byName.set(known.username, known);
      }
    }
    this.emit("updated", this.info);
  }

  private checkNotEnded(): void {
    if (this.current === "ended") throw new WacError(Status.CANCELLED, "the conference ended while joining");
  }

  private setState(state: ConferenceState): void {
    if (this.current === state || this.current === "ended") return;
    this.current = state;
    this.emit("state", state);
  }

  private end(info: ConferenceEndedInfo): void {
    if (this.current === "ended") return;
    this.clearKickTimer();
    this.endInfo = info;
    this.current = "ended";
    const tellWac = this.inWac && !this.leaving && info.reason === "error";
    this.release();
    this.host.forget(this);
    // In wac's room but out of Janus's: the others are told through wac.
    if (tellWac) void this.host.request("ConferencesService.LeaveConference", { conferenceId: this.id }).catch(() => {});
    this.emit("state", "ended");
    this.emit("ended", info);
  }

  private release(): void {
    this.leaveRoomLocally();
    this.byFeed.clear();
    this.byName.clear();
    this.janus?.close();
    this.janus = null;
    if (this.ownsStream) for (const track of this.localStream?.getTracks() ?? []) track.stop();
    for (const track of this.screenStream?.getTracks() ?? []) track.stop();
    this.screenStream = null;
  }
}

/** A uint64 of proto3 JSON (a string) as the number Janus wants; wac keeps them below 2**53. */
export function safeInteger(value: string | number | undefined, field: string): number {
  const number = typeof value === "number" ? value : Number(value ?? "");
  if (!Number.isSafeInteger(number) || number <= 0) {
    throw new WacError(Status.INTERNAL, `JoinConference gave no usable ${field}: ${String(value)}`);
  }
  return number;
}

function numberOf(value: unknown): number | null {
  if (typeof value === "number" && Number.isSafeInteger(value)) return value;
  if (typeof value === "string" && /^\d+$/.test(value)) {
    const number = Number(value);
    return Number.isSafeInteger(number) ? number : null;
  }
  return null;
}

/** The mids of a publisher's streams that are not disabled (its "streams" in a publishers list). */
function activeMids(streams: unknown): string[] {
  return records(streams)
    .filter((stream) => stream.disabled !== true && typeof stream.mid === "string")
    .map((stream) => stream.mid as string);
}

function stringOf(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function records(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.filter((v): v is Record<string, unknown> => Boolean(v) && typeof v === "object") : [];
}

/** LeaveConference after the conference ended, or after wac took us out: nothing to do. */
function ignoreGone(error: unknown): void {
  const code = error instanceof WacError ? error.code : Status.UNKNOWN;
  if (code === Status.NOT_FOUND || code === Status.FAILED_PRECONDITION || code === Status.PERMISSION_DENIED) return;
  throw error;
}

function describe(error: unknown): string {
  if (error && typeof error === "object" && "name" in error) return String((error as { name: unknown }).name);
  return String(error);
}
