/** Test doubles: a clock that moves only when told, and an in-memory transport. */
import type { Clock } from "../src/clock.js";
import type { CloseInfo, Transport, TransportContext, TransportHandler, TransportKind } from "../src/transport/transport.js";

interface Timer {
  id: number;
  at: number;
  callback: () => void;
}

export class FakeClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private nextId = 1;

  constructor(start = Date.UTC(2030, 0, 1)) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), callback };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Moves time forward, firing due timers in order (and promise callbacks between them). */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      await settle();
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.callback();
    }
    this.time = end;
    await settle();
  }

  /** The delays of the timers pending now, sorted. */
  pending(): number[] {
    return this.timers.map((t) => t.at - this.time).sort((a, b) => a - b);
  }
}

/** Lets queued promise callbacks and immediates run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** One in-memory link: the test plays the server. */
export class FakeTransport implements Transport {
  handler: TransportHandler | null = null;
  readonly sent: Array<{ id?: number; method?: string; params?: unknown }> = [];
  closed = false;
  constructor(
    readonly kind: TransportKind,
    readonly accessToken: string | undefined,
  ) {}

  open(handler: TransportHandler): void {
    this.handler = handler;
  }

  send(frame: string): void {
    if (this.closed) throw new Error("closed");
    this.sent.push(JSON.parse(frame));
  }

  close(): void {
    this.closed = true;
    this.handler = null;
  }

  // ---- the server's side ----

  accept(): void {
    this.handler?.onOpen();
  }

  fail(info: Partial<CloseInfo> = {}): void {
    const handler = this.handler;
    this.closed = true;
    this.handler = null;
    handler?.onClose({ code: 1006, reason: "", wasOpen: false, ...info });
  }

  reply(id: number | undefined, result: unknown): void {
    this.handler?.onMessage(JSON.stringify({ jsonrpc: "2.0", id, result }));
  }

  replyError(id: number | undefined, code: number, message: string, status?: string): void {
    const error = status ? { code, message, data: { status } } : { code, message };
    this.handler?.onMessage(JSON.stringify({ jsonrpc: "2.0", id, error }));
  }

  event(params: unknown): void {
    this.handler?.onMessage(JSON.stringify({ jsonrpc: "2.0", method: "event", params }));
  }

  /** The requests sent with this method, oldest first. */
  requests(method: string): Array<{ id?: number; method?: string; params?: any }> {
    return this.sent.filter((r) => r.method === method);
  }

  last(method: string): { id?: number; method?: string; params?: any } {
    const found = this.requests(method);
    if (!found.length) throw new Error(`no ${method} was sent; sent: ${this.sent.map((r) => r.method).join(", ")}`);
    return found[found.length - 1]!;
  }
}

/** Makes FakeTransports and remembers them in order. */
export class FakeNetwork {
  readonly links: FakeTransport[] = [];
  readonly contexts: TransportContext[] = [];

  readonly factory = (kind: TransportKind, context: TransportContext): FakeTransport => {
    const link = new FakeTransport(kind, context.accessToken());
    this.links.push(link);
    this.contexts.push(context);
    return link;
  };

  get current(): FakeTransport {
    const link = this.links[this.links.length - 1];
    if (!link) throw new Error("no link was opened");
    return link;
  }
}
