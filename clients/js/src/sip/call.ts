/**
 * SipCall: a call over the gateway, on a JsSIP session, behind the same Call
 * API and events as a WAPI call. JsSIP carries the signalling (INVITE, its
 * offer/answer, re-INVITEs for hold, BYE/CANCEL) and makes the peer
 * connection; this class gives it the SDK's media and ICE servers and turns
 * its events into the Call's:
 *
 *   JsSIP                            Call
 *   progress (1xx, remote)     ──►   state "ringing" (outgoing)
 *   accepted (2xx)             ──►   state "active"
 *   hold/unhold (remote)       ──►   remoteHold
 *   peerconnection, track      ──►   peerConnection, remoteStream
 *   ended / failed             ──►   ended {reason, sipStatus, error}
 *
 * A SIP call does not depend on the WAPI link: it survives a dropped WAPI
 * connection, not a dropped gateway socket (JsSIP ends it).
 */
import { Call, type CallEndedInfo, type CallHost, type MediaOptions, wants } from "../calls/call.js";
import type { WebRtcEnvironment } from "../calls/webrtc.js";
import { Status, WacError, toWacError } from "../errors.js";
import type { Call as CallInfo, Call_EndReason } from "../gen/wac.js";
import { endFromSip, type SipOriginator } from "./reasons.js";
import type { SipEventArgument, SipListener, SipMediaOptions, SipSession } from "./ua.js";

/** RFC 4733 telephone-event in the RTP (JsSIP's name for it is its predecessor's, RFC 2833). */
const DTMF_TRANSPORT = "RFC2833";

export class SipCall extends Call {
  private session: SipSession | null = null;
  private peerConnectionEnv: WebRtcEnvironment | null = null;
  /** Settles answer() and dial() once JsSIP said how it went. */
  private waiting: { resolve(): void; reject(error: WacError): void; on: string[] } | null = null;

  /** @internal Made by Wac.call() and for calls from the gateway; not by applications. */
  constructor(host: CallHost, info: CallInfo, session?: SipSession) {
    const incoming = session?.direction === "incoming";
    const display = incoming ? session?.remote_identity.display_name : undefined;
    super(host, incoming ? "incoming" : "outgoing", info, display ? { callerDisplayName: display } : {});
    if (session) this.bind(session);
  }

  override get via(): "wapi" | "sip" {
    return "sip";
  }

  /** @internal Gets the media, sends the INVITE through `invite`, and resolves once it is out (or failed). */
  async dial(invite: (options: SipMediaOptions) => SipSession, media: MediaOptions): Promise<void> {
    try {
      const options = await this.mediaOptions(media);
      const sent = this.waitFor(["sending", "progress"]);
      const session = invite({ ...options, eventHandlers: this.sessionListeners() });
      this.attach(session);
      // JsSIP may have failed it already (no connection to the gateway): then it is over, not routed.
      if (!this.hasEnded()) this.host.register(this);
      await sent;
    } catch (error) {
      const wacError = toWacError(error);
      if (this.session && !this.hasEnded()) this.finish({ reason: "FAILED", error: wacError });
      else this.release();
      throw wacError;
    }
  }

  override async answer(media: MediaOptions = {}): Promise<void> {
    const session = this.session;
    if (this.direction !== "incoming" || this.state !== "ringing" || this.peerConnection || !session) {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot answer a call that is ${this.state}`);
    }
    try {
      const options = await this.mediaOptions(media);
      const accepted = this.waitFor(["accepted"]);
      session.answer(options);
      await accepted;
    } catch (error) {
      const wacError = toWacError(error);
      if (!this.hasEnded()) this.finish({ reason: "FAILED", error: wacError });
      throw wacError;
    }
  }

  override async reject(options: { busy?: boolean } = {}): Promise<void> {
    if (this.state === "ended") return;
    if (this.direction !== "incoming" || this.state !== "ringing") {
      throw new WacError(Status.FAILED_PRECONDITION, `cannot reject a call that is ${this.state}`);
    }
    // 486 Busy Here, or 603 Decline (RFC 3261 21.4.7, 21.6.2).
    const status = options.busy ? 486 : 603;
    this.end({ reason: options.busy ? "BUSY" : "REJECTED", endedBy: this.host.username() });
    this.terminateSession({ status_code: status });
  }

  override async hangup(): Promise<void> {
    if (this.state === "ended") return;
    if (this.direction === "incoming" && this.state === "ringing") return this.reject();
    this.end({ reason: this.state === "active" ? "COMPLETED" : "CANCELLED", endedBy: this.host.username() });
    this.terminateSession();
  }

  override async hold(): Promise<void> {
    if (this.onHold) return;
    this.onHold = true;
    try {
      await this.reoffer((session, done) => session.hold({}, done));
    } catch (error) {
      this.onHold = false;
      throw error;
    }
  }

  override async resume(): Promise<void> {
    if (!this.onHold) return;
    this.onHold = false;
    try {
      await this.reoffer((session, done) => session.unhold({}, done));
    } catch (error) {
      this.onHold = true;
      throw error;
    }
  }

  /** Sends DTMF as RFC 4733 telephone-events in the audio ("0-9", "*", "#", "A-D", "," for a pause). */
  override sendDtmf(tones: string, options: { durationMs?: number; gapMs?: number } = {}): void {
    const session = this.session;
    if (!session || this.state !== "active") throw new WacError(Status.FAILED_PRECONDITION, "DTMF cannot be sent on this call now");
    try {
      session.sendDTMF(tones, {
        duration: options.durationMs ?? 100,
        interToneGap: options.gapMs ?? 70,
        transportType: DTMF_TRANSPORT,
      });
    } catch (error) {
      const code = error instanceof TypeError ? Status.INVALID_ARGUMENT : Status.FAILED_PRECONDITION;
      throw toWacError(error, code);
    }
  }

  override async restartIce(): Promise<void> {
    if (this.state !== "active") return;
    await this.reoffer((session, done) => session.renegotiate({ rtcOfferConstraints: { iceRestart: true } }, done));
  }

  /** @internal The WAPI link is back: nothing to do, the gateway's socket is JsSIP's. */
  override handleReconnected(): void {}

  /** @internal Ends the call here and at the gateway (the session is over). */
  override terminate(reason: Call_EndReason, error?: WacError): void {
    if (this.state === "ended") return;
    this.end({ reason, ...(error ? { error } : {}) });
    this.terminateSession();
  }

  // ---- internals ----

  private async mediaOptions(media: MediaOptions): Promise<SipMediaOptions> {
    const env = this.host.webrtc();
    const { stream, iceServers } = await this.acquireMedia(env, media);
    this.peerConnectionEnv = env;
    const audio = wants(media.audio, true, media.stream, "audio");
    const video = wants(media.video, false, media.stream, "video");
    return {
      ...(stream ? { mediaStream: stream } : {}),
      // JsSIP calls getUserMedia itself only without a stream; with none wanted it must not.
      mediaConstraints: { audio: stream ? audio : false, video: stream ? video : false },
      pcConfig: { iceServers },
      // A receive-only call still needs an audio section.
      ...(stream ? {} : { rtcOfferConstraints: { offerToReceiveAudio: true } }),
    };
  }

  private attach(session: SipSession): void {
    this.session = session;
    this.info = { ...this.info, callId: session.id };
  }

  private bind(session: SipSession): void {
    this.attach(session);
    for (const [event, listener] of Object.entries(this.sessionListeners())) session.on(event, listener);
  }

  /** JsSIP's session events, as the Call's. */
  private sessionListeners(): Record<string, SipListener> {
    return {
      peerconnection: (event) => {
        const pc = event.peerconnection;
        if (!pc) return;
        this.peerConnection = pc;
        pc.ontrack = (track) => this.onRemoteTrack(this.peerConnectionEnv ?? this.host.webrtc(), track);
      },
      sending: () => this.settle("sending"),
      progress: (event) => {
        if (this.direction === "outgoing" && event.originator === "remote" && this.state === "calling") {
          this.update({ state: "RINGING" });
          this.setState("ringing");
        }
        this.settle("progress");
      },
      accepted: () => {
        if (this.state !== "active" && !this.hasEnded()) {
          this.update({ state: "ACTIVE", answerTime: new Date(this.host.clock.now()).toISOString() });
          this.setState("active");
        }
        this.settle("accepted");
      },
      confirmed: () => this.setState("active"),
      hold: (event) => this.onHoldEvent(event, true),
      unhold: (event) => this.onHoldEvent(event, false),
      ended: (event) => this.onSessionEnd(event),
      failed: (event) => this.onSessionEnd(event),
    };
  }

  private onHoldEvent(event: SipEventArgument, hold: boolean): void {
    if (event.originator !== "remote" || this.remoteOnHold === hold) return;
    this.remoteOnHold = hold;
    this.emit("remoteHold", hold);
  }

  private onSessionEnd(event: SipEventArgument): void {
    if (this.hasEnded()) return;
    const originator: SipOriginator = event.originator ?? "system";
    const status = event.message?.status_code;
    const reasonHeader = event.message?.getHeader?.("Reason");
    const end = endFromSip({
      originator,
      cause: event.cause ?? "",
      ...(status !== undefined ? { status } : {}),
      ...(reasonHeader ? { reasonHeader } : {}),
    });
    const endedBy = originator === "local" ? this.host.username() : originator === "remote" ? this.peer : undefined;
    const message = `the call ended at the gateway: ${event.cause ?? "unknown"}${status ? ` (${status})` : ""}`;
    this.finish({
      reason: end.reason,
      ...(endedBy ? { endedBy } : {}),
      ...(status !== undefined && originator === "remote" ? { sipStatus: status } : {}),
      ...(end.errorStatus !== undefined ? { error: new WacError(end.errorStatus, message) } : {}),
    });
  }

  /** The call's record follows its state, as the server keeps a WAPI call's. */
  protected override end(info: CallEndedInfo): void {
    if (this.hasEnded()) return;
    this.update({
      state: "ENDED",
      endReason: info.reason,
      endTime: new Date(this.host.clock.now()).toISOString(),
      ...(info.endedBy ? { endedBy: info.endedBy } : {}),
    });
    super.end(info);
  }

  private finish(info: CallEndedInfo): void {
    this.end(info);
    const waiting = this.waiting;
    this.waiting = null;
    // dial() resolves with the call ended (as a WAPI call refused by the server); answer() fails.
    if (waiting?.on.includes("sending")) waiting.resolve();
    else waiting?.reject(info.error ?? new WacError(Status.CANCELLED, `the call ended (${info.reason})`));
    this.terminateSession();
  }

  private waitFor(events: string[]): Promise<void> {
    const settled = new Promise<void>((resolve, reject) => {
      this.waiting = { resolve, reject, on: events };
    });
    // Awaited only once JsSIP has it: a rejection before then is not unhandled.
    settled.catch(() => {});
    return settled;
  }

  private settle(event: string): void {
    if (!this.waiting?.on.includes(event)) return;
    const { resolve } = this.waiting;
    this.waiting = null;
    resolve();
  }

  /** Runs a JsSIP re-offer (hold, unhold, ICE restart) and waits for the other party's answer. */
  private reoffer(run: (session: SipSession, done: () => void) => boolean): Promise<void> {
    const session = this.session;
    if (!session || this.state !== "active") {
      return Promise.reject(new WacError(Status.FAILED_PRECONDITION, "the call is not set up"));
    }
    return new Promise<void>((resolve, reject) => {
      const ended = () => reject(new WacError(Status.CANCELLED, "the call ended"));
      const off = this.once("ended", ended);
      const done = () => {
        off();
        resolve();
      };
      // JsSIP refuses while another offer is outstanding; a failed re-INVITE ends the call (the "ended" above).
      if (!run(session, done)) {
        off();
        reject(new WacError(Status.FAILED_PRECONDITION, "the call cannot be renegotiated now"));
      }
    });
  }

  private terminateSession(options?: { status_code?: number }): void {
    const session = this.session;
    if (!session || session.isEnded()) return;
    try {
      session.terminate(options);
    } catch {
      // Already terminated by JsSIP (a race with the other party's BYE): nothing to end.
    }
  }
}
