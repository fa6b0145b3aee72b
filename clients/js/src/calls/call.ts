/**
 * Call: one WebRTC call, outgoing or incoming. It owns its media (from
 * getUserMedia unless a stream is given) and its RTCPeerConnection, and
 * carries the signalling over the WAPI:
 *
 *   caller                                    callee
 *   CreateCall {callee, offer, media}  ──►    event callInvited {call, offer}
 *   event callRinging                  ◄──
 *                                      ◄──    AnswerCall {callId, answer}
 *   event callAnswered {answer}
 *   SendIceCandidate (trickle, both ways; end with endOfCandidates)
 *   Renegotiate {callId, description}  ◄─►    event callUpdated {description}
 *   HangupCall / RejectCall            ──►    event callEnded {reason}
 *
 * Local candidates are held until the call has an id (caller) or the answer
 * was accepted (callee); remote candidates are held until the remote
 * description is set. Renegotiation follows the "perfect negotiation"
 * pattern: the callee is the polite side and rolls back its own offer on a
 * collision; the caller ignores the colliding offer. The peer connection
 * does not depend on the WAPI link: a call survives a dropped socket, and
 * its events resume with the connection.
 */
import type { Clock } from "../clock.js";
import { Emitter } from "../emitter.js";
import { Status, WacError, toWacError } from "../errors.js";
import type {
  Call as CallInfo,
  Call_EndReason,
  CallAnswered,
  CallUpdated,
  IceCandidateReceived,
  SendIceCandidateRequest,
  SessionDescription,
} from "../gen/wac.js";
import type { Requester } from "../requester.js";
import { candidateFromProto, candidateToProto, sdpIsHold, type WebRtcEnvironment } from "./webrtc.js";

export type CallState = "calling" | "ringing" | "active" | "ended";
export type CallDirection = "outgoing" | "incoming";
export type MediaKind = "audio" | "video";

export interface MediaOptions {
  /** Send audio: true, or constraints for getUserMedia (default true). */
  audio?: boolean | MediaTrackConstraints;
  /** Send video: true, or constraints for getUserMedia (default false). */
  video?: boolean | MediaTrackConstraints;
  /** Use this stream instead of calling getUserMedia. */
  stream?: MediaStream;
}

export interface CallEndedInfo {
  /** Why the call ended for this device. */
  reason: Call_EndReason;
  /** Who ended it: a username, "wac", "operator" or, for a local end, this user. */
  endedBy?: string;
  /**
   * The error that ended the call, when the SDK ended it; for a SIP call a
   * refusal the reason alone does not tell (403: PERMISSION_DENIED, 404:
   * NOT_FOUND, 401: UNAUTHENTICATED).
   */
  error?: WacError;
  /** For a call over the gateway (SIP), the final status that ended it, if one did (486, 603, …). */
  sipStatus?: number;
}

export interface CallEvents {
  state: CallState;
  ended: CallEndedInfo;
  remoteStream: MediaStream;
  /** The other party put the call on hold (true) or resumed it (false). */
  remoteHold: boolean;
  /** The call's record changed (a callRinging, callAnswered, callUpdated or callEnded). */
  updated: CallInfo;
  /** Something failed that no caller awaits (an ICE candidate that could not be sent, say). */
  error: WacError;
}

/** What a Call needs from the Wac that owns it. */
export interface CallHost {
  request: Requester;
  clock: Clock;
  webrtc(): WebRtcEnvironment;
  iceServers(): Promise<RTCIceServer[]>;
  /** The logged-in username, for endedBy on a local end. */
  username(): string | undefined;
  /** The call has an id now: route its events to it. */
  register(call: Call): void;
  /** The call ended: stop routing events to it. */
  forget(call: Call): void;
}

/** How long a renegotiation waits for the other party's answer. */
export const ANSWER_TIMEOUT_MS = 15_000;
/** How many times one renegotiation offers when offers collide. */
const MAX_OFFER_ATTEMPTS = 3;
/** How long ICE may stay 'disconnected' before the caller restarts it. */
export const ICE_DISCONNECTED_GRACE_MS = 2_000;

interface Deferred {
  resolve(): void;
  reject(error: WacError): void;
}

export class Call extends Emitter<CallEvents> {
  /** The call's record as the server last described it. */
  info: CallInfo;
  readonly direction: CallDirection;
  /** For an incoming call, the caller's display name. */
  readonly callerDisplayName: string | undefined;
  localStream: MediaStream | null = null;
  remoteStream: MediaStream | null = null;
  peerConnection: RTCPeerConnection | null = null;
  /** Whether this side put the call on hold. */
  onHold = false;
  /** Whether the other side put the call on hold. */
  remoteOnHold = false;
  private current: CallState;
  protected ownsStream = false;
  private endInfo: CallEndedInfo | null = null;

  protected readonly host: CallHost;
  private remoteOffer: SessionDescription | undefined;
  private localCandidates: SendIceCandidateRequest[] = [];
  private canSendCandidates = false;
  private remoteCandidates: Array<RTCIceCandidateInit | null> = [];
  /** Remote events, applied one at a time in arrival order. */
  private eventChain: Promise<void> = Promise.resolve();
  /** Local renegotiations, one at a time, each until its answer. */
  private negotiationChain: Promise<void> = Promise.resolve();
  private makingOffer = false;
  private ignoreOffer = false;
  private awaitingAnswer: Deferred | null = null;
  /** Our latest answer to the other party's offer, until the server took it. */
  private answerSent: Promise<void> = Promise.resolve();
  private restartingIce = false;
  private iceTimer: unknown = null;

  /** @internal Made by Wac.call() and for callInvited events; not by applications. */
  constructor(
    host: CallHost,
    direction: CallDirection,
    info: CallInfo,
    options: { offer?: SessionDescription; callerDisplayName?: string } = {},
  ) {
    super();
    this.host = host;
    this.direction = direction;
    this.info = info;
    this.remoteOffer = options.offer;
    this.callerDisplayName = options.callerDisplayName;
    this.current = direction === "incoming" ? "ringing" : "calling";
  }

  get id(): string {
    return this.info.callId ?? "";
  }

  get state(): CallState {
    return this.current;
  }

  /** The stack the call runs on: "wapi" (wac's own signalling) or "sip" (the gateway). */
  get via(): "wapi" | "sip" {
    return "wapi";
  }

  /** The other party: the callee of an outgoing call, the caller of an incoming one. */
  get peer(): string {
    return (this.direction === "outgoing" ? this.info.callee : this.info.caller) ?? "";
  }

  /** Why and by whom the call ended, once it has. */
  get ended(): CallEndedInfo | null {
    return this.endInfo;
  }

  // ---- outgoing ----

  /** @internal Sets up media, sends CreateCall, and binds the call to its id. */
  async place(callee: string, media: MediaOptions): Promise<void> {
    try {
      await this.setUp(media);
      const pc = this.peerConnection!;
      await pc.setLocalDescription(await pc.createOffer());
      const created = await this.host.request("CallsService.CreateCall", {
        callee,
        offer: { type: "OFFER", sdp: pc.localDescription?.sdp ?? "" },
        media: { audio: wants(media.audio, true, media.stream, "audio"), video: wants(media.video, false, media.stream, "video") },
      });
      this.info = { ...this.info, ...created };
      this.host.register(this);
      this.allowCandidates();
      if (created.state === "ENDED") this.end({ reason: created.endReason ?? "UNAVAILABLE", endedBy: created.endedBy ?? "wac" });
    } catch (error) {
      this.release();
      throw toWacError(error);
    }
  }

  // ---- incoming ----

  /** Accepts an incoming call with this device's media. */
  async answer(media: MediaOptions = {}): Promise<void> {
    if (this.direction !== "incoming" || this.current !== "ringing" || this.peerConnection) {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot answer a call that is ${this.current}`);
    }
    const offer = this.remoteOffer;
    if (!offer?.sdp) throw new WacError(Status.FAILED_PRECONDITION, "the call has no offer to answer");
    try {
      await this.setUp(media, offer.sdp);
      const pc = this.peerConnection!;
      await pc.setLocalDescription(await pc.createAnswer());
      const answered = await this.host.request("CallsService.AnswerCall", {
        callId: this.id,
        answer: { type: "ANSWER", sdp: pc.localDescription?.sdp ?? "" },
      });
      this.update(answered);
      this.allowCandidates();
      this.setState("active"); // unless it ended meanwhile
    } catch (error) {
      const wacError = toWacError(error);
      if (!this.hasEnded()) this.end({ reason: "FAILED", error: wacError });
      throw wacError;
    }
  }

  /** Declines an incoming call; `busy` ends it for every device of this user. */
  async reject(options: { busy?: boolean } = {}): Promise<void> {
    if (this.current === "ended") return;
    if (this.direction !== "incoming" || this.current !== "ringing") {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot reject a call that is ${this.current}`);
    }
    const reason = options.busy ? "BUSY" : "DECLINED";
    this.end({ reason: options.busy ? "BUSY" : "REJECTED", endedBy: this.host.username() });
    await this.host.request("CallsService.RejectCall", { callId: this.id, reason }).catch(ignoreEnded);
  }

  // ---- either side ----

  /**
   * Ends the call: cancels it while ringing, hangs up when active. An
   * incoming call still ringing is declined instead. Ends locally at once;
   * the request follows.
   */
  async hangup(): Promise<void> {
    if (this.current === "ended") return;
    if (this.direction === "incoming" && this.current === "ringing") return this.reject();
    const reason: Call_EndReason = this.current === "active" ? "COMPLETED" : "CANCELLED";
    this.end({ reason, endedBy: this.host.username() });
    if (this.id) await this.host.request("CallsService.HangupCall", { callId: this.id }).catch(ignoreEnded);
  }

  /** Puts the call on hold: this side stops sending and receiving (offer with sendonly/inactive). */
  async hold(): Promise<void> {
    if (this.onHold) return;
    this.onHold = true;
    await this.renegotiate(() => this.setDirections(true));
  }

  /** Takes the call off hold. */
  async resume(): Promise<void> {
    if (!this.onHold) return;
    this.onHold = false;
    await this.renegotiate(() => this.setDirections(false));
  }

  /** Mutes the local audio or video (both if no kind given); no renegotiation. */
  mute(kind?: MediaKind): void {
    this.setEnabled(kind, false);
  }

  unmute(kind?: MediaKind): void {
    this.setEnabled(kind, true);
  }

  /** Whether every local track of the kind is muted. */
  isMuted(kind: MediaKind = "audio"): boolean {
    const tracks = this.localStream?.getTracks().filter((t) => t.kind === kind) ?? [];
    return tracks.length > 0 && tracks.every((t) => !t.enabled);
  }

  /**
   * Sends DTMF tones ("0-9", "*", "#", "A-D", "," for a pause) in the audio,
   * for peers that are gateways to phone systems.
   */
  sendDtmf(tones: string, options: { durationMs?: number; gapMs?: number } = {}): void {
    const sender = this.peerConnection?.getSenders().find((s) => s.track?.kind === "audio");
    const dtmf = sender?.dtmf;
    if (!dtmf || dtmf.canInsertDTMF === false) {
      throw new WacError(Status.FAILED_PRECONDITION, "DTMF cannot be sent on this call now");
    }
    dtmf.insertDTMF(tones, options.durationMs ?? 100, options.gapMs ?? 70);
  }

  /** Restarts ICE with a new offer (the SDK does it itself when ICE fails). */
  async restartIce(): Promise<void> {
    if (this.restartingIce || this.current !== "active") return;
    this.restartingIce = true;
    try {
      await this.renegotiate(() => {}, { iceRestart: true });
    } finally {
      this.restartingIce = false;
    }
  }

  // ---- events from the Wac ----

  /** @internal */
  handleRinging(info: CallInfo | undefined): void {
    this.update(info);
    if (this.current === "calling") this.setState("ringing");
  }

  /** @internal */
  handleAnswered(event: CallAnswered): void {
    this.update(event.call);
    this.enqueueEvent(async () => {
      const pc = this.peerConnection;
      if (!pc || pc.signalingState !== "have-local-offer" || !event.answer?.sdp) return;
      await pc.setRemoteDescription({ type: "answer", sdp: event.answer.sdp });
      await this.flushRemoteCandidates();
      this.setState("active");
    });
  }

  /** @internal */
  handleUpdated(event: CallUpdated): void {
    this.update(event.call);
    const description = event.description;
    if (!description?.sdp) return;
    const sdp = description.sdp;
    this.enqueueEvent(async () => {
      const pc = this.peerConnection;
      if (!pc) return;
      if (description.type === "ANSWER") {
        if (pc.signalingState !== "have-local-offer") return; // stale, or for an offer rolled back
        await pc.setRemoteDescription({ type: "answer", sdp });
        await this.flushRemoteCandidates();
        this.awaitingAnswer?.resolve();
        this.awaitingAnswer = null;
        return;
      }
      const collision = this.makingOffer || pc.signalingState !== "stable";
      this.ignoreOffer = this.direction === "outgoing" && collision; // the caller is impolite
      if (this.ignoreOffer) return;
      if (collision) {
        // Ours gives way. An offer already set is rolled back; one still being
        // made finds the peer connection in have-remote-offer and is made again.
        if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
        this.awaitingAnswer?.reject(new WacError(Status.ABORTED, "our offer collided with the other party's"));
        this.awaitingAnswer = null;
      }
      await pc.setRemoteDescription({ type: "offer", sdp });
      await this.flushRemoteCandidates();
      await pc.setLocalDescription(await pc.createAnswer());
      const remoteHold = sdpIsHold(sdp);
      if (remoteHold !== this.remoteOnHold) {
        this.remoteOnHold = remoteHold;
        this.emit("remoteHold", remoteHold);
      }
      // Not awaited: later events must not wait for the server's receipt
      // (our next offer does: see renegotiate).
      this.answerSent = this.host
        .request("CallsService.Renegotiate", {
          callId: this.id,
          description: { type: "ANSWER", sdp: pc.localDescription?.sdp ?? "" },
        })
        .then(
          () => {},
          (error: unknown) => {
            if (!this.hasEnded()) this.emit("error", toWacError(error));
          },
        );
    });
  }

  /** @internal */
  handleIceCandidate(event: IceCandidateReceived): void {
    const candidate = event.endOfCandidates || !event.candidate ? null : candidateFromProto(event.candidate);
    this.enqueueEvent(async () => {
      const pc = this.peerConnection;
      if (!pc || !pc.remoteDescription) {
        this.remoteCandidates.push(candidate);
        return;
      }
      await this.addRemoteCandidate(pc, candidate);
    });
  }

  /** @internal */
  handleEnded(info: CallInfo | undefined, reason: Call_EndReason | undefined): void {
    this.update(info);
    this.end({ reason: reason ?? info?.endReason ?? "COMPLETED", ...(info?.endedBy ? { endedBy: info.endedBy } : {}) });
  }

  /** @internal The link is back: restart ICE if it broke meanwhile. */
  handleReconnected(): void {
    const state = this.peerConnection?.iceConnectionState;
    if (this.direction === "outgoing" && (state === "failed" || state === "disconnected")) void this.restartIce().catch(() => {});
  }

  /** @internal Ends the call on this device without telling the server (session over). */
  terminate(reason: Call_EndReason, error?: WacError): void {
    this.end({ reason, ...(error ? { error } : {}) });
  }

  // ---- internals ----

  /**
   * The local stream (kept as this call's, stopped on release when this call
   * asked for it) and the ICE servers, both asked at once so that the
   * permission prompt and the servers request overlap. Whichever stack
   * carries the call sets up its media from these.
   */
  protected async acquireMedia(
    env: WebRtcEnvironment,
    media: MediaOptions,
  ): Promise<{ stream: MediaStream | null; iceServers: RTCIceServer[] }> {
    const [servers, local] = await Promise.allSettled([this.host.iceServers(), this.getLocalStream(env, media)]);
    const stream = local.status === "fulfilled" ? local.value : null;
    this.ownsStream = Boolean(stream) && stream !== media.stream;
    this.localStream = stream;
    if (local.status === "rejected") throw local.reason;
    if (servers.status === "rejected") throw servers.reason;
    if (this.hasEnded()) {
      this.release();
      throw new WacError(Status.CANCELLED, "the call ended while it was being set up");
    }
    return { stream, iceServers: servers.value };
  }

  private async setUp(media: MediaOptions, remoteOfferSdp?: string): Promise<void> {
    const env = this.host.webrtc();
    const { stream, iceServers } = await this.acquireMedia(env, media);
    const pc = new env.RTCPeerConnection({ iceServers });
    this.peerConnection = pc;
    pc.onicecandidate = (event) => this.onLocalCandidate(event.candidate);
    pc.ontrack = (event) => this.onRemoteTrack(env, event);
    pc.oniceconnectionstatechange = () => this.onIceState(pc.iceConnectionState);
    if (remoteOfferSdp !== undefined) {
      await pc.setRemoteDescription({ type: "offer", sdp: remoteOfferSdp });
      this.remoteOnHold = sdpIsHold(remoteOfferSdp);
    }
    if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
    if (remoteOfferSdp === undefined && (!stream || stream.getTracks().length === 0)) {
      pc.addTransceiver("audio", { direction: "recvonly" }); // a receive-only call still needs a media section
    }
    if (remoteOfferSdp !== undefined) await this.flushRemoteCandidates();
  }

  protected async getLocalStream(env: WebRtcEnvironment, media: MediaOptions): Promise<MediaStream | null> {
    if (media.stream) return media.stream;
    const audio = media.audio ?? true;
    const video = media.video ?? false;
    if (!audio && !video) return null;
    try {
      return await env.getUserMedia({ audio, video });
    } catch (error) {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot use the microphone or camera: ${describe(error)}`, { cause: error });
    }
  }

  /**
   * Sends a new offer made after `change`, and waits for the answer. Runs
   * after earlier renegotiations; on a collision that rolled ours back
   * (polite side), runs again after the other party's offer.
   *
   * Glare is settled by the server too: the caller's offer wins, and the
   * callee's Renegotiate fails with FAILED_PRECONDITION "renegotiation
   * glare" while the caller's is outstanding. The callee then waits for the
   * caller's offer, which is on its way: answering it rolls ours back
   * (ABORTED), and ours is made again.
   */
  private renegotiate(change: () => void, offerOptions: RTCOfferOptions = {}): Promise<void> {
    const run = async (attempt: number): Promise<void> => {
      const pc = this.peerConnection;
      if (!pc || this.current === "ended") throw new WacError(Status.FAILED_PRECONDITION, "the call is not set up");
      // An offer can only be made from "stable": let the other party's offer,
      // if one is being answered right now, finish first.
      for (let i = 0; i < 3 && pc.signalingState === "have-remote-offer"; i += 1) await this.eventChain;
      // Requests may complete in any order: our answer to their offer must be
      // in before our own offer, or the server still sees theirs outstanding.
      await this.answerSent;
      change();
      let deferred!: Deferred;
      const answered = new Promise<void>((resolve, reject) => {
        deferred = { resolve, reject };
      });
      // Awaited only once the offer is out: a rejection before then is not unhandled.
      answered.catch(() => {});
      this.awaitingAnswer = deferred;
      // The other party's offer came in meanwhile (and took over), or ours was rolled back.
      const superseded = () => this.awaitingAnswer !== deferred || pc.signalingState !== "have-local-offer";
      const timer = this.host.clock.setTimeout(() => {
        deferred.reject(new WacError(Status.DEADLINE_EXCEEDED, "the other party did not answer the new offer"));
        if (this.awaitingAnswer === deferred) this.awaitingAnswer = null;
        if (pc.signalingState === "have-local-offer") void pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      }, ANSWER_TIMEOUT_MS);
      try {
        this.makingOffer = true;
        try {
          await pc.setLocalDescription(await pc.createOffer(offerOptions));
        } catch (error) {
          // createOffer or setLocalDescription in have-remote-offer: a collision, not a failure.
          if (superseded()) throw new WacError(Status.ABORTED, "the other party's offer came first", { cause: error });
          throw error;
        } finally {
          this.makingOffer = false;
        }
        if (superseded()) throw new WacError(Status.ABORTED, "our offer was rolled back");
        try {
          await this.host.request("CallsService.Renegotiate", {
            callId: this.id,
            description: { type: "OFFER", sdp: pc.localDescription?.sdp ?? "" },
          });
        } catch (error) {
          const wacError = toWacError(error);
          if (superseded()) throw new WacError(Status.ABORTED, "the other party's offer came first", { cause: wacError });
          // The caller's offer is coming: `answered` fails with ABORTED once it is answered.
          if (!(this.direction === "incoming" && isGlare(wacError))) throw wacError;
        }
        await answered;
      } catch (error) {
        const wacError = toWacError(error);
        if (wacError.code === Status.ABORTED && attempt < MAX_OFFER_ATTEMPTS) {
          await this.eventChain; // the other party's offer is answered first
          return run(attempt + 1);
        }
        throw wacError;
      } finally {
        this.host.clock.clearTimeout(timer);
        if (this.awaitingAnswer === deferred) this.awaitingAnswer = null;
      }
    };
    const result = this.negotiationChain.then(() => run(1));
    this.negotiationChain = result.catch(() => {});
    return result;
  }

  private setDirections(hold: boolean): void {
    for (const transceiver of this.peerConnection?.getTransceivers() ?? []) {
      if (transceiver.currentDirection === "stopped" || (transceiver as { stopped?: boolean }).stopped) continue;
      const sending = Boolean(transceiver.sender.track);
      transceiver.direction = hold ? (sending ? "sendonly" : "inactive") : sending ? "sendrecv" : "recvonly";
    }
  }

  private setEnabled(kind: MediaKind | undefined, enabled: boolean): void {
    for (const track of this.localStream?.getTracks() ?? []) {
      if (!kind || track.kind === kind) track.enabled = enabled;
    }
  }

  private onLocalCandidate(candidate: RTCIceCandidate | null): void {
    if (this.current === "ended") return;
    if (candidate && !candidate.candidate) return; // an end-of-generation marker; null follows
    const request: SendIceCandidateRequest = candidate
      ? { callId: this.id, candidate: candidateToProto(candidate.toJSON ? candidate.toJSON() : candidate) }
      : { callId: this.id, endOfCandidates: true };
    if (this.canSendCandidates) this.sendCandidate(request);
    else this.localCandidates.push(request);
  }

  private allowCandidates(): void {
    this.canSendCandidates = true;
    const held = this.localCandidates;
    this.localCandidates = [];
    for (const request of held) this.sendCandidate({ ...request, callId: this.id });
  }

  private sendCandidate(request: SendIceCandidateRequest): void {
    this.host.request("CallsService.SendIceCandidate", request).catch((error: unknown) => {
      if (this.current !== "ended") this.emit("error", toWacError(error));
    });
  }

  private async flushRemoteCandidates(): Promise<void> {
    const pc = this.peerConnection;
    if (!pc || !pc.remoteDescription) return;
    const held = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const candidate of held) await this.addRemoteCandidate(pc, candidate);
  }

  private async addRemoteCandidate(pc: RTCPeerConnection, candidate: RTCIceCandidateInit | null): Promise<void> {
    try {
      // No argument signals the end of the other party's candidates.
      await (candidate ? pc.addIceCandidate(candidate) : pc.addIceCandidate());
    } catch (error) {
      // A candidate for an offer we ignored, or of an old ICE generation, is expected to fail.
      if (!this.ignoreOffer && candidate) this.emit("error", toWacError(error, Status.INVALID_ARGUMENT));
    }
  }

  protected onRemoteTrack(env: WebRtcEnvironment, event: RTCTrackEvent): void {
    const stream = event.streams[0];
    if (stream) {
      if (stream !== this.remoteStream) {
        this.remoteStream = stream;
        this.emit("remoteStream", stream);
      }
      return;
    }
    const isNew = !this.remoteStream;
    if (!this.remoteStream) this.remoteStream = env.createMediaStream();
    this.remoteStream.addTrack(event.track);
    if (isNew) this.emit("remoteStream", this.remoteStream);
  }

  private onIceState(state: RTCIceConnectionState): void {
    this.host.clock.clearTimeout(this.iceTimer);
    this.iceTimer = null;
    // Only the caller restarts ICE, so that the two sides never both do.
    if (this.direction !== "outgoing" || this.current !== "active") return;
    if (state === "failed") void this.restartIce().catch(() => {});
    else if (state === "disconnected") {
      this.iceTimer = this.host.clock.setTimeout(() => {
        this.iceTimer = null;
        const now = this.peerConnection?.iceConnectionState;
        if (now === "disconnected" || now === "failed") void this.restartIce().catch(() => {});
      }, ICE_DISCONNECTED_GRACE_MS);
    }
  }

  private enqueueEvent(step: () => Promise<void>): void {
    this.eventChain = this.eventChain.then(async () => {
      if (this.current === "ended") return;
      try {
        await step();
      } catch (error) {
        if (!this.hasEnded()) this.emit("error", toWacError(error));
      }
    });
  }

  protected update(info: CallInfo | undefined): void {
    if (!info) return;
    this.info = { ...this.info, ...info };
    this.emit("updated", this.info);
  }

  /** Read through a method: the state changes across awaits, which narrowing does not see. */
  protected hasEnded(): boolean {
    return this.current === "ended";
  }

  protected setState(state: CallState): void {
    if (this.current === state || this.current === "ended") return;
    this.current = state;
    this.emit("state", state);
  }

  protected end(info: CallEndedInfo): void {
    if (this.current === "ended") return;
    this.endInfo = info;
    this.release();
    this.current = "ended";
    this.host.forget(this);
    this.emit("state", "ended");
    this.emit("ended", info);
  }

  /** Stops the media and closes the peer connection. */
  protected release(): void {
    this.host.clock.clearTimeout(this.iceTimer);
    this.iceTimer = null;
    this.awaitingAnswer?.reject(new WacError(Status.CANCELLED, "the call ended"));
    this.awaitingAnswer = null;
    // A stream the application passed in is the application's to stop.
    if (this.ownsStream) for (const track of this.localStream?.getTracks() ?? []) track.stop();
    const pc = this.peerConnection;
    if (pc) {
      pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = null;
      pc.close();
    }
  }
}

/** @internal Whether the call offers a kind of media (CreateCall's media field; the SIP stack's constraints). */
export function wants(option: boolean | MediaTrackConstraints | undefined, byDefault: boolean, stream: MediaStream | undefined, kind: MediaKind): boolean {
  if (stream) return stream.getTracks().some((t) => t.kind === kind);
  return option === undefined ? byDefault : Boolean(option);
}

/** The server's answer to the callee's offer while the caller's is outstanding. */
function isGlare(error: WacError): boolean {
  return error.code === Status.FAILED_PRECONDITION && /\bglare\b/i.test(error.message);
}

/** Hangup and reject race the other party and the server: "already ended" is fine. */
function ignoreEnded(error: unknown): void {
  const code = error instanceof WacError ? error.code : Status.UNKNOWN;
  if (code === Status.NOT_FOUND || code === Status.FAILED_PRECONDITION) return;
  throw error;
}

function describe(error: unknown): string {
  if (error && typeof error === "object" && "name" in error) return String((error as { name: unknown }).name);
  return String(error);
}
