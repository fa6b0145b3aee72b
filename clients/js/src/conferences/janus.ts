/**
 * The Janus WebRTC Server's API over its WebSocket (subprotocol
 * "janus-protocol"), as much of it as a VideoRoom participant needs:
 *
 *   {"janus":"create"}                              → success {data: {id}}: the session
 *   {"janus":"attach","plugin",session_id}          → success {data: {id}}: a handle
 *   {"janus":"message","body",jsep?,handle_id}      → ack, then event {plugindata, jsep?}
 *                                                     (or success {plugindata} at once)
 *   {"janus":"trickle","candidate"}                 → ack ({"completed":true} ends them)
 *   {"janus":"keepalive"} every 25 s                → ack (the session times out after 60 s)
 *   {"janus":"claim"} / {"janus":"destroy"}         → success
 *
 * Every request carries a unique "transaction" and the signed "token"
 * (Janus runs in token mode). Answers are matched by transaction; the rest
 * (plugin events, trickled candidates, hangups) go to the handle named by
 * "sender". Meetecho's janus.js is a demo library that makes its own peer
 * connections and getUserMedia and patches the browser (webrtc-adapter);
 * this is the protocol alone, the SDK keeps the WebRTC side.
 */
import type { Clock } from "../clock.js";
import { Emitter } from "../emitter.js";
import { Status, WacError } from "../errors.js";
import type { WebSocketLike } from "../transport/websocket.js";

export const JANUS_SUBPROTOCOL = "janus-protocol";
export const VIDEOROOM = "janus.plugin.videoroom";
/** Janus ends a session that said nothing for session_timeout (60 s in wac's Janus). */
export const KEEPALIVE_MS = 25_000;
/** How long a request to Janus may take, opening the WebSocket included. */
export const JANUS_TIMEOUT_MS = 15_000;

/** Makes the WebSocket to Janus: `new WebSocket(url, protocol)` in a browser. */
export type JanusSocketFactory = (url: string, protocol: string) => WebSocketLike;

export function browserJanusSocket(url: string, protocol: string): WebSocketLike {
  const WebSocketClass = (globalThis as { WebSocket?: new (url: string, protocol: string) => WebSocketLike }).WebSocket;
  if (!WebSocketClass) throw new WacError(Status.FAILED_PRECONDITION, "WebSocket is not available here");
  return new WebSocketClass(url, protocol);
}

export interface Jsep {
  type: "offer" | "answer";
  sdp: string;
}

/** A candidate as Janus trickles it, either way. */
export interface JanusCandidate {
  candidate?: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  completed?: boolean;
}

/** One message from Janus. */
export interface JanusMessage {
  janus: string;
  transaction?: string;
  session_id?: number;
  sender?: number;
  data?: { id?: number };
  plugindata?: { plugin?: string; data?: Record<string, unknown> };
  jsep?: Jsep;
  error?: { code?: number; reason?: string };
  candidate?: JanusCandidate;
  reason?: string;
}

/** A plugin's answer or event: its data, and the SDP that came with it. */
export interface PluginMessage {
  data: Record<string, unknown>;
  jsep?: Jsep;
}

export interface JanusSessionOptions {
  url: string;
  token: string;
  createSocket: JanusSocketFactory;
  clock: Clock;
  /** For transaction ids. */
  random?: () => number;
}

export interface JanusSessionEvents {
  /** The WebSocket closed or the session timed out; the session is over. */
  closed: WacError;
  /** A keepalive failed (an expired token, say). */
  error: WacError;
}

export interface JanusHandleEvents {
  /** A plugin event not answering one of our requests (a new publisher, a renegotiation offer). */
  event: PluginMessage;
  /** A candidate Janus trickled; null when it has no more. */
  trickle: RTCIceCandidateInit | null;
  /** Janus closed the handle's peer connection (its reason). */
  hangup: string;
  /** The handle's peer connection is up (ICE and DTLS). */
  webrtcup: void;
}

interface Pending {
  resolve(message: JanusMessage): void;
  reject(error: WacError): void;
  /** A plugin message: an ack means the answer comes later, as an event. */
  async: boolean;
  timer: unknown;
}

const OPEN = 1;
/** Transactions are unique across the page's sessions (a rejoin's included), not only within one. */
let transactions = 0;

/** A Janus session on one WebSocket. */
export class JanusSession extends Emitter<JanusSessionEvents> {
  /** The session's id, once created. */
  id = 0;
  /** The token each request carries; replaceable (a refreshed one). */
  token: string;
  private socket: WebSocketLike | null = null;
  private readonly pending = new Map<string, Pending>();
  private readonly handles = new Map<number, JanusHandle>();
  private keepaliveTimer: unknown = null;
  private closed = false;
  private readonly prefix: string;

  constructor(private readonly options: JanusSessionOptions) {
    super();
    this.token = options.token;
    const random = options.random ?? Math.random;
    this.prefix = Math.floor(random() * 2 ** 32).toString(36);
  }

  get isOpen(): boolean {
    return !this.closed && this.socket?.readyState === OPEN;
  }

  /** Opens the WebSocket. */
  connect(): Promise<void> {
    const { clock } = this.options;
    return new Promise<void>((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = this.options.createSocket(this.options.url, JANUS_SUBPROTOCOL);
      } catch (error) {
        reject(new WacError(Status.UNAVAILABLE, `cannot reach the media server: ${describe(error)}`, { cause: error }));
        return;
      }
      this.socket = socket;
      let opened = false;
      const timer = clock.setTimeout(() => {
        this.shut(new WacError(Status.UNAVAILABLE, "the media server did not answer"));
        reject(new WacError(Status.UNAVAILABLE, "the media server did not answer"));
      }, JANUS_TIMEOUT_MS);
      socket.onopen = () => {
        opened = true;
        clock.clearTimeout(timer);
        resolve();
      };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") this.receive(event.data);
      };
      socket.onclose = (event) => {
        clock.clearTimeout(timer);
        const error = new WacError(Status.UNAVAILABLE, `the media server's connection closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`);
        if (!opened) reject(error);
        this.shut(error);
      };
      socket.onerror = () => {}; // a close event follows, with the code
    });
  }

  /** Creates the session and keeps it alive. */
  async create(): Promise<void> {
    const created = await this.send({ janus: "create" });
    const id = created.data?.id;
    if (typeof id !== "number") throw new WacError(Status.INTERNAL, "the media server made no session");
    this.id = id;
    this.scheduleKeepalive();
  }

  /** Attaches a handle to a plugin. */
  async attach(plugin: string): Promise<JanusHandle> {
    const attached = await this.send({ janus: "attach", plugin });
    const id = attached.data?.id;
    if (typeof id !== "number") throw new WacError(Status.INTERNAL, "the media server made no handle");
    const handle = new JanusHandle(this, id);
    this.handles.set(id, handle);
    return handle;
  }

  /**
   * Ends another session of ours that Janus may still hold (a WebSocket
   * that died without Janus noticing): claimed onto this socket, then
   * destroyed, so that its publisher leaves the room. One already gone is
   * fine.
   */
  async destroyOther(sessionId: number): Promise<void> {
    try {
      await this.send({ janus: "claim", session_id: sessionId });
      await this.send({ janus: "destroy", session_id: sessionId });
    } catch (error) {
      if (!(error instanceof WacError && error.code === Status.NOT_FOUND)) throw error;
    }
  }

  /** Destroys the session (its handles leave their rooms) and closes the socket. */
  async destroy(timeoutMs = JANUS_TIMEOUT_MS): Promise<void> {
    try {
      if (this.isOpen && this.id) await this.send({ janus: "destroy" }, { timeoutMs });
    } finally {
      this.close();
    }
  }

  /** Closes the socket; pending requests fail with CANCELLED. Emits nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.release(new WacError(Status.CANCELLED, "the media server session was closed"));
  }

  /**
   * Sends a request with a fresh transaction, the token and the session id;
   * resolves with Janus's answer (for a plugin message, the event that
   * follows the ack), rejects on an error.
   */
  send(request: Record<string, unknown>, options: { async?: boolean; timeoutMs?: number } = {}): Promise<JanusMessage> {
    if (this.closed || !this.socket || this.socket.readyState !== OPEN) {
      return Promise.reject(new WacError(Status.UNAVAILABLE, "the media server is not connected"));
    }
    const transaction = `${this.prefix}-${++transactions}`;
    const frame: Record<string, unknown> = { ...request, transaction, token: this.token };
    if (this.id && frame.session_id === undefined && request.janus !== "create") frame.session_id = this.id;
    return new Promise<JanusMessage>((resolve, reject) => {
      const timer = this.options.clock.setTimeout(() => {
        this.pending.delete(transaction);
        reject(new WacError(Status.DEADLINE_EXCEEDED, `the media server did not answer ${String(request.janus)}`));
      }, options.timeoutMs ?? JANUS_TIMEOUT_MS);
      this.pending.set(transaction, { resolve, reject, async: options.async ?? false, timer });
      try {
        this.socket!.send(JSON.stringify(frame));
      } catch (error) {
        this.settle(transaction)?.reject(new WacError(Status.UNAVAILABLE, `cannot send to the media server: ${describe(error)}`));
      }
    });
  }

  /** @internal */
  forget(handle: JanusHandle): void {
    this.handles.delete(handle.id);
  }

  private receive(text: string): void {
    let message: JanusMessage;
    try {
      message = JSON.parse(text) as JanusMessage;
    } catch {
      return;
    }
    if (!message || typeof message !== "object") return;
    const waiting = message.transaction ? this.pending.get(message.transaction) : undefined;
    if (waiting) {
      if (message.janus === "ack" && waiting.async) return; // the answer follows as an event
      if (message.janus === "error") this.settle(message.transaction!)?.reject(janusError(message.error));
      else this.settle(message.transaction!)?.resolve(message);
      return;
    }
    if (message.janus === "timeout" && message.session_id === this.id) {
      this.shut(new WacError(Status.UNAVAILABLE, "the media server's session timed out"));
      return;
    }
    if (message.sender !== undefined) this.handles.get(message.sender)?.receive(message);
  }

  private settle(transaction: string): Pending | undefined {
    const waiting = this.pending.get(transaction);
    if (!waiting) return undefined;
    this.pending.delete(transaction);
    this.options.clock.clearTimeout(waiting.timer);
    return waiting;
  }

  private scheduleKeepalive(): void {
    this.keepaliveTimer = this.options.clock.setTimeout(() => {
      this.keepaliveTimer = null;
      if (this.closed) return;
      this.send({ janus: "keepalive" }).catch((error: WacError) => {
        if (!this.closed) this.emit("error", error);
      });
      this.scheduleKeepalive();
    }, KEEPALIVE_MS);
  }

  /** The session ended under us: tell, once. */
  private shut(error: WacError): void {
    if (this.closed) return;
    this.closed = true;
    this.release(error);
    this.emit("closed", error);
  }

  private release(error: WacError): void {
    this.options.clock.clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    for (const transaction of [...this.pending.keys()]) this.settle(transaction)?.reject(error);
    this.handles.clear();
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(1000, "");
    } catch {
      // already closed
    }
  }
}

/** A handle attached to a plugin. */
export class JanusHandle extends Emitter<JanusHandleEvents> {
  constructor(
    readonly session: JanusSession,
    readonly id: number,
  ) {
    super();
  }

  /** Sends a plugin message (with an SDP); resolves with the plugin's answer, rejects on its error. */
  async message(body: Record<string, unknown>, jsep?: Jsep): Promise<PluginMessage> {
    const request: Record<string, unknown> = { janus: "message", handle_id: this.id, body };
    if (jsep) request.jsep = jsep;
    const reply = await this.session.send(request, { async: true });
    const data = reply.plugindata?.data ?? {};
    if (data.error_code !== undefined || data.videoroom === "error") throw pluginError(data);
    return reply.jsep ? { data, jsep: reply.jsep } : { data };
  }

  /** Trickles one of our candidates; null says there are no more. */
  async trickle(candidate: RTCIceCandidateInit | null): Promise<void> {
    const payload: JanusCandidate = candidate
      ? {
          candidate: candidate.candidate ?? "",
          ...(candidate.sdpMid !== undefined && candidate.sdpMid !== null ? { sdpMid: candidate.sdpMid } : {}),
          ...(candidate.sdpMLineIndex !== undefined && candidate.sdpMLineIndex !== null ? { sdpMLineIndex: candidate.sdpMLineIndex } : {}),
        }
      : { completed: true };
    await this.session.send({ janus: "trickle", handle_id: this.id, candidate: payload });
  }

  /** Detaches the handle (its peer connection closes). */
  async detach(): Promise<void> {
    this.session.forget(this);
    if (this.session.isOpen) await this.session.send({ janus: "detach", handle_id: this.id });
  }

  /** @internal A message for this handle that answers none of our requests. */
  receive(message: JanusMessage): void {
    switch (message.janus) {
      case "event": {
        const data = message.plugindata?.data ?? {};
        this.emit("event", message.jsep ? { data, jsep: message.jsep } : { data });
        break;
      }
      case "trickle": {
        const candidate = message.candidate;
        if (!candidate || candidate.completed) this.emit("trickle", null);
        else {
          this.emit("trickle", {
            candidate: candidate.candidate ?? "",
            sdpMid: candidate.sdpMid ?? null,
            sdpMLineIndex: candidate.sdpMLineIndex ?? 0,
          });
        }
        break;
      }
      case "hangup":
        this.emit("hangup", message.reason ?? "");
        break;
      case "webrtcup":
        this.emit("webrtcup", undefined);
        break;
      case "detached":
        this.session.forget(this);
        break;
      default:
        break; // media, slowlink: nothing to do
    }
  }
}

/** A Janus core error as a WacError (403: a bad or expired token). */
export function janusError(error: JanusMessage["error"]): WacError {
  const code = error?.code ?? 0;
  const status =
    code === 403 || code === 405 ? Status.PERMISSION_DENIED : code === 458 || code === 459 ? Status.NOT_FOUND : Status.INTERNAL;
  return new WacError(status, `media server: ${error?.reason ?? "refused"} (${code})`, { data: { janusCode: code } });
}

/** A VideoRoom error (its error_code) as a WacError. */
export function pluginError(data: Record<string, unknown>): WacError {
  const code = typeof data.error_code === "number" ? data.error_code : 0;
  const status =
    code === 426 || code === 428
      ? Status.NOT_FOUND
      : code === 433
        ? Status.PERMISSION_DENIED
        : code === 436
          ? Status.ALREADY_EXISTS
          : code === 432
            ? Status.RESOURCE_EXHAUSTED
            : Status.FAILED_PRECONDITION;
  return new WacError(status, `media server: ${String(data.error ?? "refused")} (${code})`, { data: { janusCode: code } });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
