/**
 * Wac: the SDK's one entry point. It keeps one logical connection to the
 * WAPI (WebSocket, or HTTP when WebSockets are blocked), the session and its
 * token refresh, the event stream, the calls and the conferences.
 */
import { Call, type CallHost, type MediaOptions } from "./calls/call.js";
import { CallRegistry } from "./calls/registry.js";
import { browserWebRtc, type WebRtcEnvironment } from "./calls/webrtc.js";
import { type Clock, systemClock } from "./clock.js";
import { ConferencesApi } from "./conferences/api.js";
import { browserJanusSocket, type JanusSocketFactory } from "./conferences/janus.js";
import { ContactsApi } from "./contacts.js";
import { MessagesApi } from "./messages.js";
import { Emitter } from "./emitter.js";
import { Status, WacError, toWacError } from "./errors.js";
import type {
  ContactChanged,
  Event as WacEvent,
  GoogleLinkChanged,
  MethodName,
  Methods,
  Presence,
  Session,
  SessionRevoked,
  SipGateway,
} from "./gen/wac.js";
import { GoogleLinkApi } from "./google-link.js";
import { RETRYABLE_METHODS } from "./methods.js";
import { PresenceApi } from "./presence.js";
import type { CallOptions } from "./rpc.js";
import { SipCall } from "./sip/call.js";
import { type GatewayOptions, type SipRegistration, SipStack } from "./sip/stack.js";
import { type CallVia, routeOf, sipUri } from "./sip/target.js";
import { jssipUa, type SipSession, type SipUaFactory } from "./sip/ua.js";
import {
  accessTokenUsable,
  mergeSession,
  parseDuration,
  REFRESH_RETRY_MS,
  refreshDelay,
  refreshTokenUsable,
} from "./session.js";
import { newTraceparent } from "./trace.js";
import type { BackoffOptions } from "./transport/backoff.js";
import { Connection } from "./transport/connection.js";
import type { ConnectionState, TransportPolicy } from "./transport/machine.js";
import type { TransportFactory, TransportKind } from "./transport/transport.js";

/** Where a session may be kept across page loads: localStorage, sessionStorage, or your own. */
export interface SessionStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface WacOptions {
  /**
   * The wac server: "https://wac.example.com" (WebSocket at /wapi, HTTP
   * fallback at /wapi/http). Defaults to the page's own origin.
   */
  url?: string;
  /** 'auto' (default): WebSocket, falling back to HTTP; or only one of them. */
  transport?: TransportPolicy;
  /** The device name sent at login, shown in session lists. */
  deviceName?: string;
  /** The default timeout of each request, in ms (15 000). */
  requestTimeoutMs?: number;
  /**
   * Keep the session (its tokens) here, so that resume() can pick it up
   * after a page load. Nothing is stored unless this is set.
   */
  storage?: SessionStore;
  /** The key under which the session is stored ("wac.session"). */
  storageKey?: string;
  /** Reconnection backoff (initial 500 ms, doubling, capped at 30 s, 50% jitter). */
  reconnect?: Partial<BackoffOptions>;
  /** WebSocket failures in a row, before any success, after which 'auto' uses HTTP (3). */
  fallbackAfter?: number;
  /**
   * Replaces the browser's WebRTC (tests, or a wrapped getUserMedia). Calls
   * over the gateway take getUserMedia from it; JsSIP makes their
   * RTCPeerConnection from the browser's.
   */
  webrtc?: WebRtcEnvironment;
  /**
   * The SIP over WebSocket gateway, if there is one: after login the SDK
   * registers there with the access token, and calls numbers, tel: and sip:
   * URIs through it. By default the one wac announces at login (the
   * session's `sipGateway`: its `url`, or its `path` on the host and scheme
   * of the WAPI URL); this option wins over the announcement. With neither,
   * those calls go over the WAPI, which ends them with a reason.
   */
  gateway?: GatewayOptions;
  /**
   * The W3C traceparent of each WAPI request: called once per request, when
   * it is made (so in the caller's context), over either transport; a
   * string goes out as the request's `traceparent` member and the edge's
   * and core's spans join that trace; undefined (or "") sends none. With
   * OpenTelemetry:
   * `() => { const c: { traceparent?: string } = {}; propagation.inject(context.active(), c); return c.traceparent; }`.
   * Without a tracer, `newTraceparent` makes one. Unset: no member, no cost.
   */
  traceparent?: () => string | undefined;
  /** @internal Test seams. */
  clock?: Clock;
  /** @internal */
  random?: () => number;
  /** @internal */
  createTransport?: TransportFactory;
  /** @internal JsSIP's UA, or a fake. */
  createSipUa?: SipUaFactory;
  /** @internal The WebSocket to Janus (conferences), or a fake. */
  createJanusSocket?: JanusSocketFactory;
}

/** How `wac.call()` places a call. */
export interface PlaceCallOptions extends MediaOptions {
  /** The stack: by default a number, tel: or sip: URI goes over the gateway ("sip"), a username over the WAPI. */
  via?: CallVia;
}

export interface SessionEndedInfo {
  /** "logout", "revoked", "expired", "refresh_failed", or the server's sessionRevoked reason. */
  reason: string;
  error?: WacError;
}

export interface WacEvents {
  /** The connection state changed; also announced by the four events below. */
  state: ConnectionState;
  connecting: void;
  connected: void;
  suspended: void;
  disconnected: void;
  /** A session began or its tokens were refreshed. */
  session: Session;
  /** The session is over: logged out, revoked, or could not be refreshed. */
  sessionEnded: SessionEndedInfo;
  /** A watched subscriber's presence changed. */
  presence: Presence;
  /** A contact changed on another device (or was deleted: `deleted` is true). */
  contactChanged: ContactChanged;
  /** The Google link changed on another device, or broke (`link.state` "BROKEN": link again). */
  googleLink: GoogleLinkChanged;
  /** A call is offered to this device (over the WAPI or from the gateway: the same Call API). */
  incomingCall: Call;
  /** The registration at the gateway changed (with the `gateway` option or an announced gateway). */
  sipRegistration: SipRegistration;
  /** Events were lost while disconnected: reload presence and contacts. */
  resync: void;
  /** Every event of the session's stream, raw. */
  event: WacEvent;
  /** The connection fell back from WebSocket to HTTP. */
  fallback: TransportKind;
  /** Something failed that no caller awaits. */
  error: WacError;
}

const LOGIN_TIMEOUT_MS = 30_000;
const LOGOUT_TIMEOUT_MS = 5_000;
const DEFAULT_STORAGE_KEY = "wac.session";

export class Wac extends Emitter<WacEvents> {
  static readonly WacError = WacError;
  static readonly Status = Status;
  /** A fresh random W3C traceparent (also exported as `newTraceparent`). */
  static readonly newTraceparent = newTraceparent;

  /** The current session, or null when logged out. */
  session: Session | null = null;
  readonly presence: PresenceApi;
  readonly contacts: ContactsApi;
  readonly googleLink: GoogleLinkApi;
  /** Conferences: create, invite, list, end, and join a room (Janus); its WAPI events. */
  readonly conferences: ConferencesApi;
  /** Chat: send (queued while offline), conversations, history, read receipts, groups, blocks; its events. */
  readonly messages: MessagesApi;

  private readonly connection: Connection;
  private readonly calls = new CallRegistry();
  private readonly clock: Clock;
  private readonly options: WacOptions;
  private refreshTimer: unknown = null;
  private refreshing: Promise<Session> | null = null;
  /** The server refused the access token: the next link authenticates by refreshing. */
  private mustRefresh = false;
  private refreshDue = false;
  private iceCache: { servers: RTCIceServer[]; until: number } | null = null;
  private webrtcEnv: WebRtcEnvironment | null = null;
  private readonly detachNetworkListeners: () => void;
  private readonly callHost: CallHost;
  private sip: SipStack | null = null;

  constructor(options: WacOptions = {}) {
    super();
    this.options = options;
    this.clock = options.clock ?? systemClock;
    const { wsUrl, httpUrl } = endpoints(options.url);
    this.connection = new Connection({
      wsUrl,
      httpUrl,
      transport: options.transport ?? "auto",
      clock: this.clock,
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
      ...(options.reconnect ? { backoff: options.reconnect } : {}),
      ...(options.fallbackAfter !== undefined ? { fallbackAfter: options.fallbackAfter } : {}),
      ...(options.random ? { random: options.random } : {}),
      ...(options.createTransport ? { createTransport: options.createTransport } : {}),
      ...(options.traceparent ? { traceparent: options.traceparent } : {}),
    });
    this.connection.accessToken = () =>
      !this.mustRefresh && accessTokenUsable(this.session, this.clock.now()) ? this.session?.accessToken : undefined;
    this.connection.handshake = () => this.authenticateLink();
    this.connection.on("state", (state) => this.onConnectionState(state));
    this.connection.on("event", (event) => this.onEvent(event));
    this.connection.on("resync", () => this.onResync());
    this.connection.on("authLost", () => this.onAuthLost());
    this.connection.on("fallback", (kind) => this.emit("fallback", kind));
    this.connection.on("error", (error) => this.emit("error", error));
    const request = this.request.bind(this);
    this.presence = new PresenceApi(request);
    this.contacts = new ContactsApi(request);
    this.messages = new MessagesApi(request, options.random, this.clock);
    this.googleLink = new GoogleLinkApi(request, this.clock);
    this.detachNetworkListeners = this.listenToNetwork();
    this.callHost = {
      request: (method, params, options) => this.request(method, params, options),
      clock: this.clock,
      webrtc: () => (this.webrtcEnv ??= this.options.webrtc ?? browserWebRtc()),
      iceServers: () => this.iceServers(),
      username: () => this.session?.subscriber?.username,
      register: (call) => this.calls.add(call, deliverCallEvent),
      forget: (call) => this.calls.remove(call),
    };
    this.conferences = new ConferencesApi({
      request,
      clock: this.clock,
      webrtc: this.callHost.webrtc,
      janusUrl: (path) => janusUrl(path, endpoints(this.options.url).wsUrl),
      createSocket: options.createJanusSocket ?? browserJanusSocket,
      ...(options.random ? { random: options.random } : {}),
      username: this.callHost.username,
      connected: () => this.connection.state === "connected",
    });
    if (options.gateway) this.sip = this.sipStack(options.gateway);
  }

  private sipStack(gateway: GatewayOptions): SipStack {
    const sip = new SipStack(gateway, {
      token: () => this.freshAccessToken(),
      createUa: this.options.createSipUa ?? jssipUa,
    });
    sip.on("registration", (registration) => this.emit("sipRegistration", registration));
    sip.on("incoming", (session) => this.onSipIncoming(session));
    sip.on("error", (error) => this.emit("error", error));
    return sip;
  }

  /** The connection state: connecting, connected, suspended or disconnected. */
  get state(): ConnectionState {
    return this.connection.state;
  }

  /** The transport in use: "websocket" or "http". */
  get transport(): TransportKind {
    return this.connection.transportKind;
  }

  /** The calls in progress on this device. */
  get activeCalls(): Call[] {
    return this.calls.live;
  }

  /** This device's registration at the gateway; null with no gateway (option or announced). */
  get sipRegistration(): SipRegistration | null {
    return this.sip?.registration ?? null;
  }

  /**
   * Logs in on a fresh connection, subscribes to events, and keeps the
   * session refreshed until logout.
   */
  async login(username: string, password: string): Promise<Session> {
    if (this.session) throw new WacError(Status.FAILED_PRECONDITION, "already logged in: log out first");
    this.connection.stop();
    this.connection.start();
    let session: Session;
    try {
      const params = { username, password, ...(this.options.deviceName ? { deviceName: this.options.deviceName } : {}) };
      session = await this.request("IdentityService.Login", params, { timeoutMs: LOGIN_TIMEOUT_MS });
    } catch (error) {
      this.connection.stop();
      throw toWacError(error);
    }
    this.adoptSession(session);
    this.connection.subscribeEvents();
    return session;
  }

  /**
   * Continues a session: the one given (tokens the application kept), or the
   * one in `storage`. Returns it, or null if there is none usable; if the
   * server turns it down, `sessionEnded` follows.
   */
  resume(session?: Session): Session | null {
    if (this.session) return this.session;
    const candidate = session ?? this.loadStoredSession();
    const now = this.clock.now();
    if (!candidate || (!accessTokenUsable(candidate, now) && !refreshTokenUsable(candidate, now))) {
      if (!session) this.options.storage?.removeItem(this.storageKey);
      return null;
    }
    this.mustRefresh = false;
    this.adoptSession(candidate);
    this.connection.stop();
    this.connection.start();
    this.connection.subscribeEvents();
    return this.session;
  }

  /** Ends the session: hangs up calls, leaves conferences, logs out on the server, disconnects. */
  async logout(): Promise<void> {
    if (!this.session) {
      this.connection.stop();
      return;
    }
    await Promise.allSettled([...this.calls.live.map((call) => call.hangup()), this.conferences.leaveAll()]);
    try {
      await this.request("IdentityService.Logout", {}, { timeoutMs: LOGOUT_TIMEOUT_MS });
    } catch {
      // Best effort: the session ends here whatever the server said.
    }
    this.endSession({ reason: "logout" });
  }

  /** Sends any WAPI request on the session's connection. */
  request<M extends MethodName>(method: M, params: Methods[M][0], options: CallOptions = {}): Promise<Methods[M][1]> {
    if (this.connection.state === "disconnected") {
      return Promise.reject(new WacError(Status.FAILED_PRECONDITION, "not connected: log in first"));
    }
    return this.connection.rpc.call(method, params, { retryable: RETRYABLE_METHODS.has(method), ...options });
  }

  /** The STUN and TURN servers for RTCPeerConnection, cached for half their lifetime. */
  async iceServers(): Promise<RTCIceServer[]> {
    const now = this.clock.now();
    if (this.iceCache && this.iceCache.until > now) return this.iceCache.servers;
    const response = await this.request("CallsService.GetIceServers", {});
    const servers: RTCIceServer[] = (response.iceServers ?? []).map((server) => ({
      urls: server.urls ?? [],
      ...(server.username ? { username: server.username } : {}),
      ...(server.credential ? { credential: server.credential } : {}),
    }));
    const ttl = parseDuration(response.ttl);
    if (ttl) this.iceCache = { servers, until: now + ttl / 2 };
    return servers;
  }

  /**
   * Calls a wac username over the WAPI, or a number ("+34600111222"), a
   * "tel:" or a "sip:"/"sips:" URI over the gateway (over the WAPI when there
   * is none); `via` chooses. Resolves once the server took the call (WAPI)
   * or the INVITE is out (SIP); check `call.state` — a callee with no
   * device online ends the call at once (reason UNAVAILABLE).
   */
  async call(target: string, options: PlaceCallOptions = {}): Promise<Call> {
    if (!this.session) throw new WacError(Status.FAILED_PRECONDITION, "not logged in");
    const { via, ...media } = options;
    if (routeOf(target, via) === "sip" && (this.sip || via === "sip")) return this.callOverSip(target, media);
    const call = new Call(this.callHost, "outgoing", { callee: target, caller: this.session.subscriber?.username ?? "" });
    const done = this.calls.beginCreate();
    try {
      await call.place(target, media);
    } finally {
      done();
    }
    return call;
  }

  private async callOverSip(target: string, media: MediaOptions): Promise<Call> {
    const sip = this.sip;
    if (!sip) throw new WacError(Status.FAILED_PRECONDITION, "no gateway is configured (the gateway option)");
    const uri = sipUri(target, sip.gateway.domain);
    if (!uri) throw new WacError(Status.INVALID_ARGUMENT, `not a number nor a SIP URI: ${target}`);
    const call = new SipCall(this.callHost, { callee: target, caller: this.session?.subscriber?.username ?? "" });
    await call.dial((options) => sip.call(uri, options), media);
    return call;
  }

  /** Stops listening to the browser's network events; call when dropping the instance. */
  dispose(): void {
    this.detachNetworkListeners();
    if (this.session) this.endSession({ reason: "disposed" });
    this.connection.stop();
  }

  // ---- session ----

  private get storageKey(): string {
    return this.options.storageKey ?? DEFAULT_STORAGE_KEY;
  }

  private loadStoredSession(): Session | null {
    const text = this.options.storage?.getItem(this.storageKey);
    if (!text) return null;
    try {
      return JSON.parse(text) as Session;
    } catch {
      return null;
    }
  }

  private adoptSession(session: Session): void {
    this.session = mergeSession(this.session, session);
    this.options.storage?.setItem(this.storageKey, JSON.stringify(this.session));
    this.scheduleRefresh();
    this.syncGateway();
    this.conferences.refreshTokens();
    this.emit("session", this.session);
  }

  /** Registers at the gateway with a usable token, or gives it the refreshed one. */
  private syncGateway(): void {
    const session = this.session;
    const username = session?.subscriber?.username;
    if (!this.sip && session?.sipGateway && !this.options.gateway) {
      const announced = announcedGateway(session.sipGateway, endpoints(this.options.url).wsUrl);
      if (announced) this.sip = this.sipStack(announced);
    }
    if (!this.sip || !session?.accessToken || !username) return;
    // A token about to expire (a resumed session) waits for the refresh, which comes back here.
    if (this.mustRefresh || !accessTokenUsable(session, this.clock.now())) return;
    if (this.sip.started) this.sip.setToken(session.accessToken);
    else this.sip.start(username, session.accessToken);
  }

  /** A usable access token for the gateway, refreshing the session first when it is about to expire. */
  private async freshAccessToken(): Promise<string> {
    const session = this.session;
    if (!session) throw new WacError(Status.FAILED_PRECONDITION, "not logged in");
    if (!this.mustRefresh && session.accessToken && accessTokenUsable(session, this.clock.now())) return session.accessToken;
    // Disconnected, the next link's handshake refreshes (and syncGateway passes the token on):
    // a refresh queued behind that handshake would wait for it for ever.
    if (this.connection.state !== "connected") throw new WacError(Status.UNAVAILABLE, "wac is unreachable: no fresh token for the gateway");
    return (await this.refresh(false)).accessToken ?? "";
  }

  private scheduleRefresh(): void {
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.refreshDue = false; // the tokens are new: the next refresh is a full lifetime away
    if (!this.session) return;
    const delay = refreshDelay(this.session, this.clock.now());
    if (delay === null) return;
    this.refreshTimer = this.clock.setTimeout(() => this.onRefreshDue(), delay);
  }

  private onRefreshDue(): void {
    this.refreshTimer = null;
    if (this.connection.state !== "connected") {
      // The reconnection's handshake refreshes if the token expired meanwhile; else on connect.
      this.refreshDue = true;
      return;
    }
    this.refreshDue = false;
    this.refresh(false).catch((error: WacError) => {
      if (!this.session) return;
      // Passing trouble: try again while the access token lasts; after that the
      // server closes the link (4401) and the next link refreshes in its handshake.
      this.clock.clearTimeout(this.refreshTimer);
      this.refreshTimer = this.clock.setTimeout(() => this.onRefreshDue(), REFRESH_RETRY_MS);
      this.emit("error", error);
    });
  }

  /**
   * Trades the refresh token for a new session. One at a time: a refresh
   * token works once, and presenting it twice revokes the session.
   */
  private refresh(immediate: boolean): Promise<Session> {
    if (this.refreshing) return this.refreshing;
    const session = this.session;
    if (!session || !refreshTokenUsable(session, this.clock.now())) {
      const error = new WacError(Status.UNAUTHENTICATED, "the session expired");
      this.endSession({ reason: "expired", error });
      return Promise.reject(error);
    }
    const refreshing = this.connection.rpc
      .call("IdentityService.RefreshSession", { refreshToken: session.refreshToken ?? "" }, { immediate })
      .then(
        (next) => {
          if (this.session?.sessionId !== session.sessionId) throw new WacError(Status.CANCELLED, "the session ended");
          this.mustRefresh = false;
          this.adoptSession(next);
          return this.session!;
        },
        (error: WacError) => {
          if (error.code === Status.UNAUTHENTICATED || error.code === Status.PERMISSION_DENIED) {
            this.endSession({ reason: "refresh_failed", error });
          }
          throw error;
        },
      )
      .finally(() => {
        this.refreshing = null;
      });
    this.refreshing = refreshing;
    return refreshing;
  }

  /** The handshake of every new link: nothing before login; else prove the session. */
  private async authenticateLink(): Promise<void> {
    if (!this.session) return;
    // A WebSocket presented the token in its URL, and HTTP sends it with each request.
    if (!this.mustRefresh && accessTokenUsable(this.session, this.clock.now())) return;
    await this.refresh(true);
  }

  private onAuthLost(): void {
    if (!this.session) return;
    // The next link opens without the token and refreshes the session first;
    // if the refresh token is refused too, refresh() ends the session.
    this.mustRefresh = true;
    if (!refreshTokenUsable(this.session, this.clock.now())) {
      this.endSession({ reason: "expired", error: new WacError(Status.UNAUTHENTICATED, "the session expired") });
    }
  }

  private endSession(info: { reason: string; error?: WacError }): void {
    if (!this.session) return;
    this.session = null;
    this.mustRefresh = false;
    this.refreshDue = false;
    this.iceCache = null;
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.options.storage?.removeItem(this.storageKey);
    for (const call of this.calls.live) call.terminate("FAILED", info.error);
    this.conferences.terminateAll(info.error ?? new WacError(Status.UNAUTHENTICATED, `the session ended: ${info.reason}`));
    this.messages.abandon(info.error ?? new WacError(Status.UNAUTHENTICATED, `the session ended: ${info.reason}`));
    this.sip?.stop();
    // The next session learns the gateway again (its login may announce another or none).
    if (!this.options.gateway) this.sip = null;
    this.connection.unsubscribeEvents();
    this.connection.stop(info.error ?? new WacError(Status.UNAUTHENTICATED, `the session ended: ${info.reason}`));
    this.emit("sessionEnded", info);
  }

  // ---- connection ----

  private onConnectionState(state: ConnectionState): void {
    this.emit("state", state);
    this.emit(state, undefined);
    if (state !== "connected" || !this.session) return;
    if (this.refreshDue) this.onRefreshDue();
    for (const call of this.calls.live) call.handleReconnected();
    this.messages.resend();
  }

  private listenToNetwork(): () => void {
    const target = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
      removeEventListener?: (type: string, listener: () => void) => void;
    };
    if (typeof target.addEventListener !== "function" || typeof target.removeEventListener !== "function") {
      return () => {};
    }
    const online = () => this.connection.wake();
    const offline = () => this.connection.drop("the browser went offline");
    target.addEventListener("online", online);
    target.addEventListener("offline", offline);
    return () => {
      target.removeEventListener?.("online", online);
      target.removeEventListener?.("offline", offline);
    };
  }

  // ---- events ----

  private onEvent(event: WacEvent): void {
    this.emit("event", event);
    if (event.presenceChanged) this.emit("presence", event.presenceChanged);
    else if (event.contactChanged) this.emit("contactChanged", event.contactChanged);
    else if (event.googleLinkChanged) this.emit("googleLink", event.googleLinkChanged);
    else if (event.sessionRevoked) this.onSessionRevoked(event.sessionRevoked);
    else if (event.callInvited) this.onCallInvited(event);
    else if (this.messages.handleEvent(event)) return;
    else if (!this.conferences.handleEvent(event)) this.routeCallEvent(event);
  }

  private onSessionRevoked(revoked: SessionRevoked): void {
    if (revoked.sessionId && this.session?.sessionId && revoked.sessionId !== this.session.sessionId) return;
    this.endSession({
      reason: revoked.reason || "revoked",
      error: new WacError(Status.UNAUTHENTICATED, `the session was revoked (${revoked.reason || "revoked"})`),
    });
  }

  private onCallInvited(event: WacEvent): void {
    const invited = event.callInvited!;
    const callId = invited.call?.callId;
    if (!callId || this.calls.knows(callId) || invited.call?.state === "ENDED") return;
    const call = new Call(this.callHost, "incoming", invited.call ?? {}, {
      ...(invited.offer ? { offer: invited.offer } : {}),
      ...(invited.callerDisplayName ? { callerDisplayName: invited.callerDisplayName } : {}),
    });
    this.calls.add(call, deliverCallEvent);
    this.emit("incomingCall", call);
  }

  /** A call from the gateway: the same incomingCall as a WAPI one. */
  private onSipIncoming(session: SipSession): void {
    const username = this.session?.subscriber?.username;
    if (!username) {
      session.terminate({ status_code: 480 }); // logged out meanwhile: Temporarily Unavailable
      return;
    }
    const from = session.remote_identity.uri;
    const call = new SipCall(this.callHost, { callId: session.id, caller: from.user || String(from), callee: username, state: "RINGING" }, session);
    this.calls.add(call, deliverCallEvent);
    this.emit("incomingCall", call);
  }

  private routeCallEvent(event: WacEvent): void {
    const callId =
      event.callRinging?.call?.callId ??
      event.callAnswered?.call?.callId ??
      event.callUpdated?.call?.callId ??
      event.iceCandidate?.callId ??
      event.callEnded?.call?.callId;
    if (!callId) return;
    const call = this.calls.get(callId);
    if (call) deliverCallEvent(call, event);
    else this.calls.hold(callId, event);
  }

  /** Events were lost: calls that ended meanwhile are ended here too. */
  private onResync(): void {
    this.emit("resync", undefined);
    for (const call of this.calls.live) {
      if (!call.id) continue;
      this.request("CallsService.GetCall", { callId: call.id })
        .then((info) => {
          if (info.state === "ENDED") call.handleEnded(info, info.endReason);
        })
        .catch((error: WacError) => {
          if (error.code === Status.NOT_FOUND) call.handleEnded(undefined, "FAILED");
        });
    }
  }
}

function deliverCallEvent(call: Call, event: WacEvent): void {
  if (event.callRinging) call.handleRinging(event.callRinging.call);
  else if (event.callAnswered) call.handleAnswered(event.callAnswered);
  else if (event.callUpdated) call.handleUpdated(event.callUpdated);
  else if (event.iceCandidate) call.handleIceCandidate(event.iceCandidate);
  else if (event.callEnded) call.handleEnded(event.callEnded.call, event.callEnded.reason);
}

/** The WebSocket and HTTP endpoints of a wac server's base URL. */
/**
 * The gateway a session announces: its `url`, or its `path` on the scheme
 * (ws/wss) and host of the WAPI URL, since only the client knows the name it
 * reached wac by. Null when the announcement says neither or has no domain.
 */
export function announcedGateway(announced: SipGateway, wapiUrl: string): GatewayOptions | null {
  if (!announced.domain) return null;
  if (announced.url) return { url: announced.url, domain: announced.domain };
  if (!announced.path) return null;
  const wapi = new URL(wapiUrl);
  const path = announced.path.startsWith("/") ? announced.path : `/${announced.path}`;
  return { url: `${wapi.protocol}//${wapi.host}${path}`, domain: announced.domain };
}

/**
 * Janus's WebSocket URL: the path wac gives (JoinConference's janusPath)
 * on the scheme (ws/wss) and host of the WAPI URL, as for the gateway; a
 * ws: or wss: URL as it is.
 */
export function janusUrl(path: string, wapiUrl: string): string {
  if (/^wss?:\/\//i.test(path)) return path;
  const wapi = new URL(wapiUrl);
  return `${wapi.protocol}//${wapi.host}${path.startsWith("/") ? path : `/${path}`}`;
}

export function endpoints(url: string | undefined): { wsUrl: string; httpUrl: string } {
  const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
  const base = new URL(url ?? origin ?? "", origin);
  const path = base.pathname.replace(/\/+$/, "").replace(/\/wapi$/, "");
  const secure = base.protocol === "https:" || base.protocol === "wss:";
  const host = base.host;
  return {
    wsUrl: `${secure ? "wss" : "ws"}://${host}${path}/wapi`,
    httpUrl: `${secure ? "https" : "http"}://${host}${path}/wapi/http`,
  };
}
