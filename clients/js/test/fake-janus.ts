/**
 * A fake Janus (the VideoRoom plugin, one room) behind fake WebSockets,
 * speaking the protocol the SDK's Janus stack uses. It answers as Janus does
 * (success, ack then event, errors) a moment later, and records every
 * request; what a real Janus in token mode would refuse, and what the SDK
 * must never send (no token, a reused transaction, ids that are not
 * numbers), goes to `violations`.
 */
import type { WebSocketLike } from "../src/transport/websocket.js";

export const JANUS_OFFER_SDP = "v=0 janus offer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
export const JANUS_ANSWER_SDP = "v=0 janus answer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
const PLUGIN = "janus.plugin.videoroom";

export interface JanusRequest {
  janus: string;
  transaction?: string;
  token?: string;
  session_id?: number;
  handle_id?: number;
  plugin?: string;
  body?: any;
  jsep?: { type: string; sdp: string };
  candidate?: any;
}

export class FakeJanusSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: JanusRequest[] = [];
  closedByClient = false;

  constructor(
    private readonly janus: FakeJanus,
    readonly url: string,
    readonly protocol: string,
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    const request = JSON.parse(data) as JanusRequest;
    this.sent.push(request);
    this.janus.receive(this, request);
  }

  close(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedByClient = true;
    this.janus.gone(this);
  }

  // ---- Janus's side ----

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  push(message: object): void {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
  }

  /** The connection drops under the client. */
  drop(code = 1006): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.janus.gone(this);
    this.onclose?.({ code, reason: "" });
  }
}

export interface FakeHandle {
  id: number;
  session: FakeSession;
  ptype?: "publisher" | "subscriber";
  feedId?: number;
  display?: string;
  privateId?: number;
  feed?: number;
  candidates: any[];
  detached: boolean;
}

export interface FakeSession {
  id: number;
  socket: FakeJanusSocket;
  handles: Map<number, FakeHandle>;
  destroyed: boolean;
}

export class FakeJanus {
  /** The Janus token every request must carry. */
  token = "jt1";
  /** The room token a publisher must join with. */
  roomToken = "rt1";
  room = 1234;
  readonly sockets: FakeJanusSocket[] = [];
  readonly requests: JanusRequest[] = [];
  readonly violations: string[] = [];
  readonly sessions = new Map<number, FakeSession>();
  /** Publishers in the room that are not the SDK's: feed id → display. */
  readonly remote = new Map<number, string>();
  /** Makes a plugin request fail: [error_code, error] for the bodies it picks. */
  refuse: ((body: any) => [number, string] | undefined) | null = null;
  private nextId = 5000;
  private readonly transactions = new Set<string>();

  readonly factory = (url: string, protocol: string): FakeJanusSocket => {
    const socket = new FakeJanusSocket(this, url, protocol);
    this.sockets.push(socket);
    queueMicrotask(() => socket.open());
    return socket;
  };

  get socket(): FakeJanusSocket {
    const socket = this.sockets.at(-1);
    if (!socket) throw new Error("no WebSocket to Janus was opened");
    return socket;
  }

  /** The requests of a kind ("keepalive"), or plugin messages with that body request ("join"). */
  sentOf(janus: string, request?: string): JanusRequest[] {
    return this.requests.filter((r) => r.janus === janus && (request === undefined || r.body?.request === request));
  }

  handles(ptype?: "publisher" | "subscriber"): FakeHandle[] {
    const all: FakeHandle[] = [];
    for (const session of this.sessions.values()) {
      if (session.destroyed) continue;
      for (const handle of session.handles.values()) if (!ptype || handle.ptype === ptype) all.push(handle);
    }
    return all;
  }

  /** The SDK's publisher handle in the room. */
  publisher(): FakeHandle {
    const handle = this.handles("publisher").at(-1);
    if (!handle) throw new Error("no publisher joined");
    return handle;
  }

  /** @internal */
  receive(socket: FakeJanusSocket, request: JanusRequest): void {
    this.requests.push(request);
    const { transaction } = request;
    if (typeof transaction !== "string" || !transaction) this.violations.push(`${request.janus} without a transaction`);
    else if (this.transactions.has(transaction)) this.violations.push(`${request.janus}: transaction ${transaction} used again`);
    else this.transactions.add(transaction);
    if (request.token !== this.token) this.violations.push(`${request.janus} with token ${String(request.token)}`);
    queueMicrotask(() => this.answer(socket, request));
  }

  /** @internal A socket closed: Janus destroys its sessions (no reclaim timeout). */
  gone(socket: FakeJanusSocket): void {
    for (const session of this.sessions.values()) if (session.socket === socket) this.destroy(session);
  }

  // ---- the test's controls ----

  /** Someone else publishes (or publishes more: `mids`): every publisher in the room hears of it. */
  publish(feedId: number, display: string, mids: string[] = ["0", "1"]): void {
    this.remote.set(feedId, display);
    this.notifyPublishers({ videoroom: "event", room: this.room, publishers: [publisherEntry(feedId, display, mids)] });
  }

  unpublish(feedId: number): void {
    this.remote.delete(feedId);
    this.notifyPublishers({ videoroom: "event", room: this.room, unpublished: feedId });
  }

  /** A remote participant's "joining" (notify_joining), before it publishes. */
  joining(feedId: number, display: string): void {
    this.notifyPublishers({ videoroom: "event", room: this.room, joining: { id: feedId, display } });
  }

  /** An operator's kick of a feed: it hears "leaving ok, kicked"; the others "kicked". */
  kick(feedId: number): void {
    for (const handle of this.handles("publisher")) {
      if (handle.feedId === feedId) this.notify(handle, { videoroom: "event", room: this.room, leaving: "ok", reason: "kicked" });
      else this.notify(handle, { videoroom: "event", room: this.room, kicked: feedId });
    }
    this.remote.delete(feedId);
  }

  destroyRoom(): void {
    this.notifyPublishers({ videoroom: "destroyed", room: this.room });
  }

  /** An event for a handle, answering no request. */
  notify(handle: FakeHandle, data: object, jsep?: object): void {
    handle.session.socket.push({
      janus: "event",
      session_id: handle.session.id,
      sender: handle.id,
      plugindata: { plugin: PLUGIN, data },
      ...(jsep ? { jsep } : {}),
    });
  }

  /** Janus trickles a candidate to a handle (full_trickle); null: completed. */
  trickle(handle: FakeHandle, candidate: string | null): void {
    handle.session.socket.push({
      janus: "trickle",
      session_id: handle.session.id,
      sender: handle.id,
      candidate: candidate === null ? { completed: true } : { candidate, sdpMid: "0", sdpMLineIndex: 0 },
    });
  }

  hangup(handle: FakeHandle, reason = "DTLS alert"): void {
    handle.session.socket.push({ janus: "hangup", session_id: handle.session.id, sender: handle.id, reason });
  }

  // ---- Janus ----

  private notifyPublishers(data: object): void {
    for (const handle of this.handles("publisher")) this.notify(handle, data);
  }

  private destroy(session: FakeSession): void {
    session.destroyed = true;
    for (const handle of session.handles.values()) handle.detached = true;
  }

  private answer(socket: FakeJanusSocket, request: JanusRequest): void {
    const reply = (message: object) => socket.push({ transaction: request.transaction, ...message });
    const fail = (code: number, reason: string) => reply({ janus: "error", session_id: request.session_id, error: { code, reason } });
    if (request.token !== this.token) return fail(403, "Unauthorized request (wrong or missing secret/token)");
    if (request.janus === "create") {
      const id = ++this.nextId;
      this.sessions.set(id, { id, socket, handles: new Map(), destroyed: false });
      return reply({ janus: "success", data: { id } });
    }
    const session = request.session_id === undefined ? undefined : this.sessions.get(request.session_id);
    if (!session || session.destroyed) return fail(458, "No such session");
    switch (request.janus) {
      case "claim":
        session.socket = socket;
        return reply({ janus: "success", session_id: session.id });
      case "destroy":
        this.destroy(session);
        return reply({ janus: "success", session_id: session.id });
      case "keepalive":
        return reply({ janus: "ack", session_id: session.id });
      case "attach": {
        if (request.plugin !== PLUGIN) return fail(460, "No such plugin");
        const id = ++this.nextId;
        session.handles.set(id, { id, session, candidates: [], detached: false });
        return reply({ janus: "success", session_id: session.id, data: { id } });
      }
    }
    const handle = request.handle_id === undefined ? undefined : session.handles.get(request.handle_id);
    if (!handle || handle.detached) return fail(459, "No such handle");
    switch (request.janus) {
      case "detach":
        handle.detached = true;
        session.handles.delete(handle.id);
        return reply({ janus: "success", session_id: session.id });
      case "trickle":
        handle.candidates.push(request.candidate);
        return reply({ janus: "ack", session_id: session.id });
      case "message":
        reply({ janus: "ack", session_id: session.id });
        return this.plugin(handle, request);
      default:
        return fail(453, `Unknown request '${request.janus}'`);
    }
  }

  private plugin(handle: FakeHandle, request: JanusRequest): void {
    const body = request.body ?? {};
    const event = (data: object, jsep?: object) =>
      handle.session.socket.push({
        janus: "event",
        session_id: handle.session.id,
        sender: handle.id,
        transaction: request.transaction,
        plugindata: { plugin: PLUGIN, data },
        ...(jsep ? { jsep } : {}),
      });
    const error = (code: number, text: string) => event({ videoroom: "event", error_code: code, error: text });
    const refused = this.refuse?.(body);
    if (refused) return error(...refused);
    switch (body.request) {
      case "join": {
        if (typeof body.room !== "number") this.violations.push(`join with room ${JSON.stringify(body.room)}`);
        if (body.room !== this.room) return error(426, `No such room (${String(body.room)})`);
        if (body.ptype === "publisher") {
          if (typeof body.id !== "number") this.violations.push(`join with id ${JSON.stringify(body.id)}`);
          if (body.token !== this.roomToken) return error(433, "Unauthorized (not in the allowed list)");
          if (this.handles("publisher").some((h) => h.feedId === body.id)) return error(436, `User ID ${String(body.id)} already exists`);
          Object.assign(handle, { ptype: "publisher", feedId: body.id, display: body.display, privateId: ++this.nextId });
          const publishers = [...this.remote].map(([id, display]) => publisherEntry(id, display));
          return event({ videoroom: "joined", room: this.room, id: body.id, private_id: handle.privateId, publishers, attendees: [] });
        }
        const feed = body.streams?.[0]?.feed;
        if (typeof feed !== "number") this.violations.push(`subscription to feed ${JSON.stringify(feed)}`);
        if (!this.handles("publisher").some((h) => h.privateId === body.private_id)) return error(433, "Unauthorized (this room requires a valid private_id)");
        if (!this.remote.has(feed)) return error(428, `No such feed (${String(feed)})`);
        Object.assign(handle, { ptype: "subscriber", feed });
        const streams = [
          { mid: "0", type: "audio", feed_id: feed, feed_mid: "0" },
          { mid: "1", type: "video", feed_id: feed, feed_mid: "1" },
        ];
        return event({ videoroom: "attached", room: this.room, streams }, { type: "offer", sdp: JANUS_OFFER_SDP });
      }
      case "update": {
        if (handle.ptype !== "subscriber" || !Array.isArray(body.subscribe)) return error(429, "Missing element (subscribe)");
        if (body.subscribe.some((s: any) => typeof s.feed !== "number")) this.violations.push(`update with feed ${JSON.stringify(body.subscribe)}`);
        return event({ videoroom: "updated", room: this.room }, { type: "offer", sdp: `${JANUS_OFFER_SDP}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n` });
      }
      case "configure":
        if (request.jsep?.type !== "offer") return error(429, "Missing SDP offer");
        return event({ videoroom: "event", room: this.room, configured: "ok" }, { type: "answer", sdp: JANUS_ANSWER_SDP });
      case "start":
        if (request.jsep?.type !== "answer") return error(429, "Missing SDP answer");
        return event({ videoroom: "event", room: this.room, started: "ok" });
      case "leave":
        return event({ videoroom: "event", room: this.room, leaving: "ok" });
      default:
        return error(423, `Invalid request ${String(body.request)}`);
    }
  }
}

function publisherEntry(id: number, display: string, mids: string[] = ["0", "1"]): object {
  const streams = mids.map((mid, mindex) =>
    mindex === 0 ? { type: "audio", mindex, mid, codec: "opus" } : { type: "video", mindex, mid, codec: "vp8" },
  );
  return { id, display, streams };
}
