/**
 * A fake of JsSIP's UA and RTCSession, enough to drive the SDK's SIP stack:
 * the test plays the gateway. It makes its peer connection from the fake
 * WebRTC's class with the pcConfig it was given, as JsSIP does with the
 * browser's, and ends sessions with JsSIP's events and causes.
 */
import type { SipEventArgument, SipListener, SipMediaOptions, SipSession, SipUa, SipUaConfig } from "../src/sip/ua.js";
import { FakePeerConnection } from "./fake-webrtc.js";

class Listeners {
  private readonly map = new Map<string, SipListener[]>();
  on(event: string, listener: SipListener): void {
    this.map.set(event, [...(this.map.get(event) ?? []), listener]);
  }
  emit(event: string, argument: SipEventArgument = {}): void {
    for (const listener of this.map.get(event) ?? []) listener(argument);
  }
  count(event: string): number {
    return this.map.get(event)?.length ?? 0;
  }
}

let nextSession = 1;

export class FakeSipSession implements SipSession {
  readonly id = `call-${nextSession++}`;
  connection: RTCPeerConnection | null = null;
  readonly remote_identity: SipSession["remote_identity"];
  readonly listeners = new Listeners();
  readonly answered: SipMediaOptions[] = [];
  readonly terminated: Array<{ status_code?: number } | undefined> = [];
  readonly dtmf: Array<{ tones: string; options: unknown }> = [];
  readonly reoffers: Array<{ kind: string; done?: () => void }> = [];
  private status: "early" | "confirmed" | "ended" = "early";

  constructor(
    readonly direction: "incoming" | "outgoing",
    remote: { user: string; host?: string; displayName?: string },
  ) {
    const host = remote.host ?? "example.test";
    this.remote_identity = {
      display_name: remote.displayName ?? null,
      uri: { user: remote.user, host, toString: () => `sip:${remote.user}@${host}` },
    };
  }

  on(event: string, listener: SipListener): void {
    this.listeners.on(event, listener);
  }

  /** JsSIP makes its RTCPeerConnection from the options, then announces it. */
  connect(options: SipMediaOptions): void {
    const pc = new FakePeerConnection(options.pcConfig ?? {});
    this.connection = pc as unknown as RTCPeerConnection;
    this.listeners.emit("peerconnection", { peerconnection: this.connection });
  }

  answer(options: SipMediaOptions): void {
    if (this.direction !== "incoming" || this.status !== "early") throw new Error("INVALID_STATE_ERROR");
    this.answered.push(options);
    this.connect(options);
    this.status = "confirmed";
    this.listeners.emit("accepted", { originator: "local" });
  }

  terminate(options?: { status_code?: number }): void {
    if (this.status === "ended") throw new Error("INVALID_STATE_ERROR");
    this.terminated.push(options);
    const confirmed = this.status === "confirmed";
    this.status = "ended";
    if (confirmed) this.listeners.emit("ended", { originator: "local", cause: "Terminated" });
    else this.listeners.emit("failed", { originator: "local", cause: this.direction === "incoming" ? "Rejected" : "Canceled" });
  }

  hold(_options?: object, done?: () => void): boolean {
    return this.reoffer("hold", "hold", done);
  }

  unhold(_options?: object, done?: () => void): boolean {
    return this.reoffer("unhold", "unhold", done);
  }

  renegotiate(_options?: object, done?: () => void): boolean {
    return this.reoffer("renegotiate", null, done);
  }

  sendDTMF(tones: string, options?: unknown): void {
    if (this.status !== "confirmed") throw new Error("INVALID_STATE_ERROR");
    if (!/^[0-9A-DR#*,]+$/i.test(tones)) throw new TypeError(`Invalid tones: ${tones}`);
    this.dtmf.push({ tones, options });
  }

  isEnded(): boolean {
    return this.status === "ended";
  }

  // ---- the gateway's side ----

  /** A provisional response (180 Ringing). */
  ring(): void {
    this.listeners.emit("progress", { originator: "remote", response: { status_code: 180 } });
  }

  /** The 2xx to our INVITE. */
  accept(): void {
    this.status = "confirmed";
    this.listeners.emit("accepted", { originator: "remote", response: { status_code: 200 } });
    this.listeners.emit("confirmed", { originator: "local" });
  }

  /** A final failure response to our INVITE. */
  fail(status: number, cause: string): void {
    this.status = "ended";
    this.listeners.emit("failed", { originator: "remote", cause, message: { status_code: status } });
  }

  /** A CANCEL from the caller, with its Reason header if any. */
  cancel(reason?: string): void {
    this.status = "ended";
    this.listeners.emit("failed", {
      originator: "remote",
      cause: "Canceled",
      message: { getHeader: (name: string) => (name.toLowerCase() === "reason" ? reason : undefined) },
    });
  }

  /** A BYE from the other party. */
  bye(): void {
    this.status = "ended";
    this.listeners.emit("ended", { originator: "remote", cause: "Terminated", message: {} });
  }

  /** The other party's re-INVITE putting us on hold (true) or taking us off it. */
  remoteHold(hold: boolean): void {
    this.listeners.emit(hold ? "hold" : "unhold", { originator: "remote" });
  }

  /** The 200 to our last re-INVITE. */
  answerReoffer(): void {
    const last = this.reoffers.shift();
    last?.done?.();
  }

  private reoffer(kind: string, event: string | null, done?: () => void): boolean {
    if (this.status !== "confirmed" || this.reoffers.length > 0) return false;
    this.reoffers.push({ kind, ...(done ? { done } : {}) });
    // JsSIP announces a local hold at once, before the answer.
    if (event) this.listeners.emit(event, { originator: "local" });
    return true;
  }
}

export class FakeSipUa implements SipUa {
  static instances: FakeSipUa[] = [];
  /** What the UA did, in order: ["start"], ["set", value], ["register"], ["stop"]. */
  readonly log: string[][] = [];
  readonly listeners = new Listeners();
  readonly calls: Array<{ target: string; options: SipMediaOptions; session: FakeSipSession }> = [];
  authorization: string;
  private registered = false;

  constructor(readonly config: SipUaConfig) {
    this.authorization = config.authorization;
    FakeSipUa.instances.push(this);
  }

  static readonly factory = (config: SipUaConfig): FakeSipUa => new FakeSipUa(config);

  static get last(): FakeSipUa {
    const ua = FakeSipUa.instances.at(-1);
    if (!ua) throw new Error("no UA was made");
    return ua;
  }

  on(event: string, listener: SipListener): void {
    this.listeners.on(event, listener);
  }

  start(): void {
    this.log.push(["start"]);
  }

  stop(): void {
    this.log.push(["stop"]);
  }

  register(): void {
    this.log.push(["register", this.authorization]);
  }

  set(parameter: "authorization_jwt", value: string): boolean {
    this.log.push(["set", parameter, value]);
    this.authorization = value;
    return true;
  }

  call(target: string, options: SipMediaOptions): FakeSipSession {
    if (!/^sips?:/.test(target)) throw new TypeError(`Invalid target: ${target}`);
    const session = new FakeSipSession("outgoing", { user: target.replace(/^sips?:/, "").split("@")[0] ?? "" });
    for (const [event, listener] of Object.entries(options.eventHandlers ?? {})) session.on(event, listener);
    this.calls.push({ target, options, session });
    session.connect(options);
    session.listeners.emit("sending", { originator: "local" });
    return session;
  }

  isRegistered(): boolean {
    return this.registered;
  }

  // ---- the gateway's side ----

  emit(event: string, argument?: SipEventArgument): void {
    if (event === "registered") this.registered = true;
    if (event === "unregistered" || event === "registrationFailed") this.registered = false;
    this.listeners.emit(event, argument);
  }

  /** An INVITE from the gateway. */
  invite(from: { user: string; displayName?: string }): FakeSipSession {
    const session = new FakeSipSession("incoming", from);
    this.listeners.emit("newRTCSession", { originator: "remote", session });
    return session;
  }
}
