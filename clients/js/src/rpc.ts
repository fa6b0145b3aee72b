/**
 * The JSON-RPC 2.0 client side of the WAPI, without I/O: it numbers requests,
 * matches responses to them, times them out, and decides what happens to
 * requests when the link under it drops. The Connection feeds it frames and
 * tells it when a link is usable.
 *
 * Guarantees:
 * - Every call settles exactly once: with its result, a WacError from the
 *   server, DEADLINE_EXCEEDED after its timeout (counted from the call, queue
 *   time included), UNAVAILABLE when its link drops, or CANCELLED on close().
 * - Requests made while no link is ready wait in a queue, in call order, and
 *   go out when one is; the handshake's own requests (`immediate`) skip it.
 * - A request in flight when the link drops fails with UNAVAILABLE, unless
 *   it was marked retryable: then it is sent once more on the next link, and
 *   fails with UNAVAILABLE if that link drops too. Mark a request retryable
 *   only if the server may safely run it twice.
 */
import type { Clock } from "./clock.js";
import { errorFromJsonRpc, type JsonRpcErrorObject, Status, WacError } from "./errors.js";
import type { MethodName, Methods } from "./gen/wac.js";
import { type TraceparentSource, traceparentOf } from "./trace.js";

export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;

export interface CallOptions {
  /** Milliseconds before the call fails with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  /** Whether the call may be sent again on a new link if its link drops. */
  retryable?: boolean;
  /** Send now on the open link, before it is ready (handshake requests). */
  immediate?: boolean;
}

interface Pending {
  id: number;
  frame: string;
  retryable: boolean;
  retried: boolean;
  /** Whether the frame went out on the current link. */
  sent: boolean;
  timer: unknown;
  resolve(result: unknown): void;
  reject(error: WacError): void;
}

export type NotificationHandler = (method: string, params: unknown) => void;

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Calls not sent yet, in call order. */
  private queue: Pending[] = [];
  private send: ((frame: string) => void) | null = null;
  private ready = false;

  constructor(
    private readonly clock: Clock,
    private readonly onNotification: NotificationHandler,
    private readonly defaultTimeoutMs: number = DEFAULT_REQUEST_TIMEOUT_MS,
    /** Asked once per call, when it is made: the W3C traceparent its request carries, if any. */
    private readonly traceparent?: TraceparentSource,
  ) {}

  /** Calls a WAPI method; see the class comment for how it settles. */
  call<M extends MethodName>(method: M, params: Methods[M][0], options: CallOptions = {}): Promise<Methods[M][1]> {
    return this.callRaw(method, params, options) as Promise<Methods[M][1]>;
  }

  /** Calls a method by any name, for methods newer than the generated types. */
  callRaw(method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const frame = JSON.stringify(this.request(id, method, params));
      const pending: Pending = {
        id,
        frame,
        retryable: options.retryable ?? false,
        retried: false,
        sent: false,
        timer: null,
        resolve,
        reject,
      };
      const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
      pending.timer = this.clock.setTimeout(() => {
        this.settle(id)?.reject(
          new WacError(Status.DEADLINE_EXCEEDED, `${method} got no answer within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.pending.set(id, pending);
      if (options.immediate) {
        if (!this.send) {
          this.settle(id)?.reject(new WacError(Status.UNAVAILABLE, `${method}: not connected`));
          return;
        }
        this.transmit(pending);
      } else if (this.ready) {
        this.transmit(pending);
      } else {
        this.queue.push(pending);
      }
    });
  }

  /** A link opened: immediate calls can go out on it. */
  attach(send: (frame: string) => void): void {
    this.send = send;
    this.ready = false;
  }

  /** The link is ready for every call: the queue goes out, in order. */
  setReady(): void {
    if (!this.send) return;
    this.ready = true;
    const queue = this.queue;
    this.queue = [];
    for (const pending of queue) {
      if (this.pending.has(pending.id)) this.transmit(pending);
    }
  }

  /** The link dropped: calls sent on it fail, or wait for the next if retryable. */
  detach(reason: string): void {
    this.send = null;
    this.ready = false;
    const requeue: Pending[] = [];
    for (const pending of [...this.pending.values()]) {
      if (!pending.sent) continue;
      if (pending.retryable && !pending.retried) {
        pending.retried = true;
        pending.sent = false;
        requeue.push(pending);
      } else {
        this.settle(pending.id)?.reject(new WacError(Status.UNAVAILABLE, `connection lost: ${reason}`));
      }
    }
    // Retried calls were made before anything still queued: they go first.
    this.queue = [...requeue.sort((a, b) => a.id - b.id), ...this.queue];
  }

  /** Fails every call, sent or queued (logout, session end). */
  failAll(error: WacError): void {
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(error);
    this.queue = [];
  }

  /** How many calls have not settled. */
  get size(): number {
    return this.pending.size;
  }

  /** Handles one incoming text frame: a response, a notification or a batch of them. */
  handleFrame(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not JSON-RPC; nothing can be matched to it
    }
    for (const item of Array.isArray(message) ? message : [message]) this.handleMessage(item);
  }

  private handleMessage(message: unknown): void {
    if (!message || typeof message !== "object") return;
    const { id, method, params, result, error } = message as {
      id?: unknown;
      method?: unknown;
      params?: unknown;
      result?: unknown;
      error?: JsonRpcErrorObject;
    };
    if (typeof method === "string") {
      // Requests from the server are not part of the WAPI; notifications are.
      if (id === undefined || id === null) this.onNotification(method, params);
      return;
    }
    if (typeof id !== "number") return; // e.g. a parse error about a frame we cannot name
    const pending = this.settle(id);
    if (!pending) return; // timed out already, or not ours
    if (error && typeof error === "object") pending.reject(errorFromJsonRpc(error));
    else pending.resolve(result ?? {});
  }

  /**
   * One request object. `traceparent` (the WAPI's one extension member) is
   * read when the call is made, in the caller's context, and kept with the
   * frame: a queued or retried request carries the same one.
   */
  private request(id: number, method: string, params: unknown): object {
    const request = { jsonrpc: "2.0", id, method, params: params ?? {} };
    const traceparent = this.traceparent && traceparentOf(this.traceparent);
    return traceparent ? { ...request, traceparent } : request;
  }

  private transmit(pending: Pending): void {
    pending.sent = true;
    try {
      this.send!(pending.frame);
    } catch (cause) {
      this.settle(pending.id)?.reject(new WacError(Status.UNAVAILABLE, "send failed", { cause }));
    }
  }

  /** Removes a call from the books; returns it unless it had settled already. */
  private settle(id: number): Pending | undefined {
    const pending = this.pending.get(id);
    if (!pending) return undefined;
    this.pending.delete(id);
    this.clock.clearTimeout(pending.timer);
    const index = this.queue.indexOf(pending);
    if (index >= 0) this.queue.splice(index, 1);
    return pending;
  }
}
