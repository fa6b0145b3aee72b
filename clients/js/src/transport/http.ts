/**
 * HttpTransport: the WAPI over plain HTTP, for networks that block WebSockets.
 *
 * - Each request frame is POSTed to `<httpUrl>` and the response body is
 *   delivered as the incoming frame.
 * - `EventsService.Subscribe` is not POSTed: it starts the long-poll loop on
 *   `GET <httpUrl>/events?afterSeq=N`, and is answered when the first poll
 *   returns — with `{}`, or with the poll's error (OUT_OF_RANGE, say), so the
 *   Connection handles both transports alike. Polled events are delivered as
 *   `event` notifications, and the next poll asks after the last one.
 * - The access token goes as `Authorization: Bearer`, read for every fetch so
 *   that a refreshed token applies at once; Login and RefreshSession go
 *   without it.
 * - The link "drops" (onClose) when a fetch fails at the network level (code
 *   1006), a poll fails after the first (1011, or 4401 for HTTP 401), or a
 *   request presented a token and got HTTP 401 (4401): the same signals a
 *   WebSocket would give.
 */
import { type Clock, systemClock } from "../clock.js";
import { type JsonRpcErrorObject, Status, statusFromHttp } from "../errors.js";
import { CloseCode, type CloseInfo, type Transport, type TransportContext, type TransportHandler } from "./transport.js";

export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal: AbortSignal },
) => Promise<{ status: number; ok: boolean; text(): Promise<string> }>;

export interface HttpTransportOptions {
  /** The fetch function; the global one by default. */
  fetch?: FetchLike;
  /** How long a poll may take before it counts as lost: the server holds 25 s. */
  pollTimeoutMs?: number;
  clock?: Clock;
}

export const DEFAULT_POLL_TIMEOUT_MS = 40_000;

const SUBSCRIBE = "EventsService.Subscribe";
/** Methods that authenticate by their params, not by a bearer token. */
const TOKENLESS_METHODS = new Set(["IdentityService.Login", "IdentityService.RefreshSession"]);

interface RequestFrame {
  id?: number | string | null;
  method?: string;
  params?: { afterSeq?: string };
}

export class HttpTransport implements Transport {
  readonly kind = "http" as const;
  private handler: TransportHandler | null = null;
  private readonly aborts = new Set<AbortController>();
  /** Bumped whenever a new poll loop starts, so that an old loop stops. */
  private pollGeneration = 0;
  private readonly clock: Clock;
  private readonly fetch: FetchLike;

  constructor(
    private readonly context: Pick<TransportContext, "httpUrl" | "accessToken">,
    private readonly options: HttpTransportOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.fetch = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
  }

  open(handler: TransportHandler): void {
    this.handler = handler;
    // There is no connection to set up: the first fetch will tell whether the server is there.
    this.clock.setTimeout(() => this.handler?.onOpen(), 0);
  }

  send(frame: string): void {
    if (!this.handler) throw new Error("the HTTP transport is closed");
    const parsed = JSON.parse(frame) as RequestFrame | RequestFrame[];
    const requests = Array.isArray(parsed) ? parsed : [parsed];
    const first = requests[0];
    if (!Array.isArray(parsed) && first?.method === SUBSCRIBE) {
      this.startPolling(first.id ?? null, String(first.params?.afterSeq ?? "0"));
      return;
    }
    const withToken = !requests.every((r) => r.method && TOKENLESS_METHODS.has(r.method));
    void this.post(frame, requests, withToken);
  }

  close(): void {
    this.handler = null;
    this.pollGeneration += 1;
    for (const controller of this.aborts) controller.abort();
    this.aborts.clear();
  }

  private async post(frame: string, requests: RequestFrame[], withToken: boolean): Promise<void> {
    const token = withToken ? this.context.accessToken() : undefined;
    const outcome = await this.request("POST", this.context.httpUrl, token, frame);
    if (!this.handler || !outcome) return;
    const { status, body } = outcome;
    if (looksLikeJsonRpcResponse(body)) {
      this.handler.onMessage(body);
    } else {
      // The edge's own error ({"error": {...}}, e.g. 413), a proxy's page or an
      // empty body: answer each request with it, or from the HTTP status.
      const error: JsonRpcErrorObject = parseError(body) ?? { code: httpErrorCode(status), message: `HTTP ${status}` };
      const responses = requests
        .filter((r) => r.id !== undefined && r.id !== null)
        .map((r) => (status >= 200 && status < 300 ? { jsonrpc: "2.0", id: r.id, result: {} } : { jsonrpc: "2.0", id: r.id, error }));
      if (responses.length) this.handler?.onMessage(JSON.stringify(responses));
    }
    if (status === 401 && token) this.drop({ code: CloseCode.UNAUTHENTICATED, reason: "HTTP 401", wasOpen: true });
    else if (status === 502 || status === 503 || status === 504) {
      this.drop({ code: CloseCode.SERVER_ERROR, reason: `HTTP ${status}`, wasOpen: true });
    }
  }

  private startPolling(subscribeId: number | string | null, afterSeq: string): void {
    const generation = ++this.pollGeneration;
    void this.pollLoop(generation, subscribeId, afterSeq);
  }

  private async pollLoop(generation: number, subscribeId: number | string | null, afterSeq: string): Promise<void> {
    let answered = false;
    let cursor = afterSeq;
    while (this.handler && generation === this.pollGeneration) {
      const url = `${this.context.httpUrl}/events?afterSeq=${encodeURIComponent(cursor)}`;
      const outcome = await this.request("GET", url, this.context.accessToken(), undefined, this.options.pollTimeoutMs ?? DEFAULT_POLL_TIMEOUT_MS);
      if (!outcome || !this.handler || generation !== this.pollGeneration) return;
      const { status, body } = outcome;
      if (status < 200 || status >= 300) {
        const error = parseError(body) ?? { code: httpErrorCode(status), message: `HTTP ${status}` };
        if (!answered && subscribeId !== null) {
          this.handler.onMessage(JSON.stringify({ jsonrpc: "2.0", id: subscribeId, error }));
          if (status === 401) this.drop({ code: CloseCode.UNAUTHENTICATED, reason: "HTTP 401", wasOpen: true });
          return;
        }
        const code = status === 401 ? CloseCode.UNAUTHENTICATED : CloseCode.SERVER_ERROR;
        this.drop({ code, reason: error.message ?? `HTTP ${status}`, wasOpen: true });
        return;
      }
      if (!answered) {
        answered = true;
        if (subscribeId !== null) this.handler.onMessage(JSON.stringify({ jsonrpc: "2.0", id: subscribeId, result: {} }));
      }
      const events = parseEvents(body);
      if (events.length) {
        const last = events[events.length - 1]!.seq;
        if (last !== undefined) cursor = String(last);
        this.handler?.onMessage(JSON.stringify(events.map((params) => ({ jsonrpc: "2.0", method: "event", params }))));
      }
    }
  }

  /** One fetch; undefined when it failed at the network level (the link is then dropped). */
  private async request(
    method: string,
    url: string,
    token: string | undefined,
    body?: string,
    timeoutMs?: number,
  ): Promise<{ status: number; body: string } | undefined> {
    const controller = new AbortController();
    this.aborts.add(controller);
    const timer = timeoutMs === undefined ? null : this.clock.setTimeout(() => controller.abort(), timeoutMs);
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers["Authorization"] = `Bearer ${token}`;
    try {
      const response = await this.fetch(url, {
        method,
        headers,
        signal: controller.signal,
        ...(body !== undefined ? { body } : {}),
      });
      return { status: response.status, body: await response.text() };
    } catch (error) {
      const closedByUs = !this.aborts.has(controller);
      if (!closedByUs) {
        const reason = controller.signal.aborted ? "poll timed out" : error instanceof Error ? error.message : "fetch failed";
        this.drop({ code: CloseCode.ABNORMAL, reason, wasOpen: true });
      }
      return undefined;
    } finally {
      if (timer !== null) this.clock.clearTimeout(timer);
      this.aborts.delete(controller);
    }
  }

  private drop(info: CloseInfo): void {
    const handler = this.handler;
    this.close();
    handler?.onClose(info);
  }
}

function httpErrorCode(status: number): number {
  return status >= 200 && status < 300 ? Status.OK : statusFromHttp(status);
}

function looksLikeJsonRpcResponse(body: string): boolean {
  try {
    const parsed = JSON.parse(body) as unknown;
    const items = Array.isArray(parsed) ? parsed : [parsed];
    return items.length > 0 && items.every((item) => item && typeof item === "object" && "jsonrpc" in item);
  } catch {
    return false;
  }
}

/** The error of a failed poll: a JSON-RPC response's error, or a bare error object. */
function parseError(body: string): JsonRpcErrorObject | undefined {
  try {
    const parsed = JSON.parse(body) as { error?: JsonRpcErrorObject; code?: unknown };
    if (parsed.error && typeof parsed.error.code === "number") return parsed.error;
    if (typeof parsed.code === "number") return parsed as JsonRpcErrorObject;
  } catch {
    // not JSON
  }
  return undefined;
}

function parseEvents(body: string): Array<{ seq?: string }> {
  try {
    const parsed = JSON.parse(body) as { events?: unknown };
    return Array.isArray(parsed.events) ? (parsed.events as Array<{ seq?: string }>) : [];
  } catch {
    return [];
  }
}
