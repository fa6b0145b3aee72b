/**
 * Connection: one logical link to the WAPI that outlives any one socket. It
 * carries out the state machine's decisions with real transports and timers,
 * runs the handshake on every new link, resubscribes to events after the
 * last seq seen, drops duplicate events, and turns OUT_OF_RANGE into a
 * `resync` event followed by a fresh subscription.
 *
 * Order on every new link: the handshake's requests (authentication), then
 * `EventsService.Subscribe` {afterSeq}, then the requests that queued while
 * no link was ready, in call order.
 */
import { type Clock, systemClock } from "../clock.js";
import { Emitter } from "../emitter.js";
import { Status, WacError } from "../errors.js";
import type { Event as WacEvent } from "../gen/wac.js";
import { DEFAULT_REQUEST_TIMEOUT_MS, RpcClient } from "../rpc.js";
import type { TraceparentSource } from "../trace.js";
import type { BackoffOptions } from "./backoff.js";
import { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
import { EventCursor } from "./cursor.js";
import { HttpTransport } from "./http.js";
import { type Action, ConnectionMachine, type ConnectionState, type TransportPolicy } from "./machine.js";
import {
  CloseCode,
  type CloseInfo,
  type Transport,
  type TransportContext,
  type TransportFactory,
  type TransportKind,
} from "./transport.js";
import { WebSocketTransport } from "./websocket.js";

export interface ConnectionOptions {
  wsUrl: string;
  httpUrl: string;
  /** 'auto' (WebSocket, falling back to HTTP), 'websocket' or 'http'. */
  transport?: TransportPolicy;
  /** The default per-request timeout, in ms (15 s). */
  requestTimeoutMs?: number;
  backoff?: Partial<BackoffOptions>;
  /** WebSocket failures in a row, before any success, that make 'auto' use HTTP (3). */
  fallbackAfter?: number;
  /** How long a link must last to reset the backoff, in ms (10 s). */
  stableAfterMs?: number;
  /** How long Subscribe may take; over HTTP its answer waits for the first poll (40 s). */
  subscribeTimeoutMs?: number;
  clock?: Clock;
  random?: () => number;
  /** Makes transports; tests pass fakes. */
  createTransport?: TransportFactory;
  /** The W3C traceparent each request carries (the WAPI's `traceparent` member); none if unset. */
  traceparent?: TraceparentSource;
}

export interface ConnectionEvents {
  /** The connection state changed. */
  state: ConnectionState;
  /** A new event from the session's stream (duplicates already dropped). */
  event: WacEvent;
  /** Events were lost (OUT_OF_RANGE): state must be reloaded. Fired before resubscribing. */
  resync: void;
  /** The server refused the session's credentials (close code 4401). */
  authLost: void;
  /** 'auto' gave up on WebSocket and now uses HTTP. */
  fallback: TransportKind;
  /** Something failed that no caller is waiting for. */
  error: WacError;
}

/** Runs on every new link before it counts as connected; throws to fail the link. */
export type Handshake = (kind: TransportKind) => Promise<void>;

export const SUBSCRIBE_TIMEOUT_MS = 40_000;

export function defaultTransportFactory(kind: TransportKind, context: TransportContext): Transport {
  if (kind === "http") return new HttpTransport(context);
  const token = context.accessToken();
  const url = token ? `${context.wsUrl}?access_token=${encodeURIComponent(token)}` : context.wsUrl;
  return new WebSocketTransport(url);
}

export class Connection extends Emitter<ConnectionEvents> {
  readonly rpc: RpcClient;
  readonly cursor = new EventCursor();
  /** Authenticates each new link; set by the owner (Wac). */
  handshake: Handshake | null = null;
  /** The access token a new link presents, if any. */
  accessToken: () => string | undefined = () => undefined;

  private readonly machine: ConnectionMachine;
  private readonly clock: Clock;
  private readonly createTransport: TransportFactory;
  private transport: Transport | null = null;
  /** Identifies the current link, so that late callbacks of an old one are ignored. */
  private linkId = 0;
  private retryTimer: unknown = null;
  private subscribed = false;
  private readonly backoff: BackoffOptions;
  /** Subscribes refused in a row on the current link, and the next try. */
  private subscribeFailures = 0;
  private subscribeTimer: unknown = null;

  constructor(private readonly options: ConnectionOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.createTransport = options.createTransport ?? defaultTransportFactory;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.machine = new ConnectionMachine({
      policy: options.transport ?? "auto",
      backoff: this.backoff,
      ...(options.fallbackAfter !== undefined ? { fallbackAfter: options.fallbackAfter } : {}),
      ...(options.stableAfterMs !== undefined ? { stableAfterMs: options.stableAfterMs } : {}),
      ...(options.random ? { random: options.random } : {}),
    });
    this.rpc = new RpcClient(
      this.clock,
      (method, params) => this.onNotification(method, params),
      options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      options.traceparent,
    );
  }

  get state(): ConnectionState {
    return this.machine.state;
  }

  /** The transport in use, or to be used by the next link. */
  get transportKind(): TransportKind {
    return this.machine.kind;
  }

  /** Starts connecting (no-op if already connected or trying). */
  start(): void {
    this.apply(this.machine.start());
  }

  /** Closes the link and stops retrying; pending requests fail with `error`. */
  stop(error: WacError = new WacError(Status.CANCELLED, "disconnected")): void {
    this.rpc.failAll(error); // first, so that closing the link does not fail them as UNAVAILABLE
    this.apply(this.machine.stop());
  }

  /** Retries now if waiting to (e.g. the browser came back online). */
  wake(): void {
    this.apply(this.machine.wake());
  }

  /** Drops the current link as if the network had (e.g. the browser went offline). */
  drop(reason: string): void {
    if (this.transport) this.onLinkClosed(this.linkId, { code: CloseCode.ABNORMAL, reason, wasOpen: true });
  }

  /**
   * Subscribes to the session's events now if connected, and again after
   * every reconnection, after the last seq seen.
   */
  subscribeEvents(): void {
    this.subscribed = true;
    if (this.state === "connected") this.sendSubscribe(this.linkId);
  }

  /** Stops resubscribing and forgets the event position (logout). */
  unsubscribeEvents(): void {
    this.subscribed = false;
    this.cursor.reset();
  }

  private apply(actions: Action[]): void {
    for (const action of actions) {
      switch (action.type) {
        case "state":
          this.emit("state", action.state);
          break;
        case "open":
          this.openLink(action.kind);
          break;
        case "close":
          this.closeLink("closed by the client");
          break;
        case "wait":
          this.clock.clearTimeout(this.retryTimer);
          this.retryTimer = this.clock.setTimeout(() => {
            this.retryTimer = null;
            this.apply(this.machine.timer());
          }, action.ms);
          break;
        case "cancelWait":
          this.clock.clearTimeout(this.retryTimer);
          this.retryTimer = null;
          break;
        case "fallback":
          this.emit("fallback", action.to);
          break;
        case "authLost":
          this.emit("authLost", undefined);
          break;
      }
    }
  }

  private openLink(kind: TransportKind): void {
    const id = ++this.linkId;
    const transport = this.createTransport(kind, {
      wsUrl: this.options.wsUrl,
      httpUrl: this.options.httpUrl,
      accessToken: () => this.accessToken(),
    });
    this.transport = transport;
    transport.open({
      onOpen: () => {
        if (id !== this.linkId) return;
        this.rpc.attach((frame) => transport.send(frame));
        void this.runHandshake(id, kind);
      },
      onMessage: (text) => {
        if (id === this.linkId) this.rpc.handleFrame(text);
      },
      onClose: (info) => this.onLinkClosed(id, info),
    });
  }

  private async runHandshake(id: number, kind: TransportKind): Promise<void> {
    try {
      if (this.handshake) await this.handshake(kind);
    } catch (error) {
      if (id !== this.linkId) return; // the link is gone already, and was reported
      const wacError = error instanceof WacError ? error : new WacError(Status.UNKNOWN, String(error));
      const code = wacError.code === Status.UNAUTHENTICATED ? CloseCode.UNAUTHENTICATED : CloseCode.ABNORMAL;
      this.onLinkClosed(id, { code, reason: `handshake failed: ${wacError.message}`, wasOpen: true });
      return;
    }
    if (id !== this.linkId) return;
    const actions = this.machine.ready(this.clock.now());
    if (this.subscribed) this.sendSubscribe(id);
    this.rpc.setReady();
    this.apply(actions);
  }

  private sendSubscribe(id: number): void {
    const afterSeq = this.cursor.afterSeq;
    this.rpc
      .call(
        "EventsService.Subscribe",
        { afterSeq },
        { immediate: true, timeoutMs: this.options.subscribeTimeoutMs ?? SUBSCRIBE_TIMEOUT_MS },
      )
      .then(() => {
        if (id === this.linkId) this.subscribeFailures = 0;
      })
      .catch((error: WacError) => {
        // A link that dropped is gone from here: the next one resubscribes.
        if (id !== this.linkId || !this.subscribed) return;
        if (error.code === Status.OUT_OF_RANGE) {
          this.cursor.reset();
          this.emit("resync", undefined);
          if (id === this.linkId && this.state === "connected") this.sendSubscribe(id);
        } else if (error.code === Status.UNAVAILABLE || error.code === Status.DEADLINE_EXCEEDED) {
          // The link is up but the stream is not (the core was busy or
          // unreachable): without another Subscribe no event would come
          // until the next link. Tried again with jittered backoff, so a
          // crowd of clients refused together does not return together.
          this.resubscribeLater(id);
        } else if (error.code !== Status.UNAUTHENTICATED) {
          // (UNAUTHENTICATED: the server closes with 4401 next.)
          this.emit("error", error);
        }
      });
  }

  private resubscribeLater(id: number): void {
    this.clock.clearTimeout(this.subscribeTimer);
    const delay = backoffDelay(this.subscribeFailures, this.backoff, this.options.random);
    this.subscribeFailures += 1;
    this.subscribeTimer = this.clock.setTimeout(() => {
      this.subscribeTimer = null;
      if (id === this.linkId && this.subscribed) this.sendSubscribe(id);
    }, delay);
  }

  private onNotification(method: string, params: unknown): void {
    if (method !== "event" || !params || typeof params !== "object") return;
    const event = params as WacEvent;
    if (!this.cursor.accept(event.seq)) return;
    this.emit("event", event);
  }

  private onLinkClosed(id: number, info: CloseInfo): void {
    if (id !== this.linkId) return;
    this.closeLink(info.reason || `closed with code ${info.code}`);
    this.apply(this.machine.failed(this.clock.now(), info));
  }

  /** Ends the current link: its late callbacks are ignored, its requests fail or requeue. */
  private closeLink(reason: string): void {
    const transport = this.transport;
    this.transport = null;
    this.linkId += 1;
    this.clock.clearTimeout(this.subscribeTimer);
    this.subscribeTimer = null;
    this.subscribeFailures = 0;
    transport?.close(CloseCode.NORMAL, reason);
    this.rpc.detach(reason);
  }
}
