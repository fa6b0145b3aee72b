/** WebSocketTransport: the WAPI over one WebSocket, one JSON-RPC frame per text message. */
import { type Clock, systemClock } from "../clock.js";
import { CloseCode, type Transport, type TransportHandler } from "./transport.js";

/** The part of the WebSocket API the transport uses (the browser's, or a test double). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface WebSocketTransportOptions {
  /** The WebSocket class; the global one by default. */
  WebSocket?: WebSocketConstructor;
  /** How long opening may take before the attempt counts as failed, in ms. */
  openTimeoutMs?: number;
  clock?: Clock;
}

/**
 * A healthy server answers the upgrade in well under a second even on a slow
 * mobile link; three timed-out attempts (the 'auto' fallback's default) plus
 * their backoff must fit within the 30 s a login waits.
 */
export const DEFAULT_OPEN_TIMEOUT_MS = 8_000;

const OPEN = 1;

export class WebSocketTransport implements Transport {
  readonly kind = "websocket" as const;
  private socket: WebSocketLike | null = null;
  private handler: TransportHandler | null = null;
  private openTimer: unknown = null;
  private opened = false;
  private readonly clock: Clock;

  constructor(
    private readonly url: string,
    private readonly options: WebSocketTransportOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
  }

  open(handler: TransportHandler): void {
    this.handler = handler;
    const WebSocketClass =
      this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketClass) {
      this.finish({ code: CloseCode.ABNORMAL, reason: "WebSocket is not available", wasOpen: false });
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = new WebSocketClass(this.url);
    } catch (error) {
      // A malformed URL or a blocked port throws synchronously.
      const reason = error instanceof Error ? error.message : String(error);
      this.clock.setTimeout(() => this.finish({ code: CloseCode.ABNORMAL, reason, wasOpen: false }), 0);
      return;
    }
    this.socket = socket;
    this.openTimer = this.clock.setTimeout(() => {
      this.finish({ code: CloseCode.ABNORMAL, reason: "opening timed out", wasOpen: false });
    }, this.options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS);
    socket.onopen = () => {
      this.clock.clearTimeout(this.openTimer);
      this.opened = true;
      this.handler?.onOpen();
    };
    socket.onmessage = (event) => {
      // The WAPI sends text frames only; a binary frame cannot be JSON-RPC.
      if (typeof event.data === "string") this.handler?.onMessage(event.data);
    };
    socket.onclose = (event) => {
      this.finish({ code: event.code, reason: event.reason, wasOpen: this.opened });
    };
    // An error is always followed by a close event, which carries the code.
    socket.onerror = () => {};
  }

  send(frame: string): void {
    if (!this.socket || this.socket.readyState !== OPEN) throw new Error("the WebSocket is not open");
    this.socket.send(frame);
  }

  close(code: number = CloseCode.NORMAL, reason = ""): void {
    this.handler = null;
    this.release(code, reason);
  }

  /** Reports the end once, and lets the socket go. */
  private finish(info: { code: number; reason: string; wasOpen: boolean }): void {
    const handler = this.handler;
    this.handler = null;
    this.release(CloseCode.NORMAL, "");
    handler?.onClose(info);
  }

  private release(code: number, reason: string): void {
    this.clock.clearTimeout(this.openTimer);
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      // Closing an already closed socket, or a code the browser refuses: nothing to do.
    }
  }
}
