/**
 * A Transport carries JSON-RPC text frames between the SDK and the WAPI, and
 * event notifications back. Two implementations: WebSocketTransport, the
 * normal one, and HttpTransport, the fallback for networks that block
 * WebSockets. A transport is used for one link: a new one is made for every
 * (re)connection.
 */

export type TransportKind = "websocket" | "http";

/** How a link ended. Codes are WebSocket close codes, also for HTTP. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the link had opened before it ended. */
  wasOpen: boolean;
}

/** The WebSocket close codes the WAPI uses, and the ones the SDK reports. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  /** No close frame: the network failed, or the socket never opened. */
  ABNORMAL: 1006,
  /** Policy violation or flooding: reconnect, but slowly. */
  POLICY: 1008,
  /** A frame was too large. */
  TOO_LARGE: 1009,
  /** The server failed (HTTP fallback: a 5xx answer). */
  SERVER_ERROR: 1011,
  /** The session's token is invalid, expired or revoked. */
  UNAUTHENTICATED: 4401,
} as const;

export interface TransportHandler {
  /** The link can carry frames. */
  onOpen(): void;
  /** One text frame: a response, a notification, or a batch of them. */
  onMessage(text: string): void;
  /** The link ended or could not open; called at most once, never after close(). */
  onClose(info: CloseInfo): void;
}

export interface Transport {
  readonly kind: TransportKind;
  /** Starts opening the link; the outcome arrives through the handler. */
  open(handler: TransportHandler): void;
  /** Sends one JSON-RPC request frame; throws if the link is not open. */
  send(frame: string): void;
  /** Ends the link. Idempotent; the handler hears nothing more after it. */
  close(code?: number, reason?: string): void;
}

/** What a transport needs to reach the WAPI. */
export interface TransportContext {
  /** The WebSocket endpoint, e.g. "wss://wac.example.com/wapi". */
  wsUrl: string;
  /** The HTTP fallback endpoint, e.g. "https://wac.example.com/wapi/http". */
  httpUrl: string;
  /** The access token to present now, if the session has a usable one. */
  accessToken(): string | undefined;
}

export type TransportFactory = (kind: TransportKind, context: TransportContext) => Transport;
