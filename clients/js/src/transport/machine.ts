/**
 * The connection state machine, without I/O: it receives what happened (a
 * link opened, became ready, dropped; a timer fired) with the current time,
 * and returns what to do next as a list of actions. The Connection carries
 * the actions out; the tests feed it inputs directly.
 *
 * States:
 * - connecting: a link is opening (and authenticating).
 * - connected: a link is ready; requests flow.
 * - suspended: the link was lost or could not open; a retry is scheduled.
 *   Calls keep their media, and requests wait in the queue.
 * - disconnected: not connected and not trying (before start, after stop).
 *
 * Transport choice ('auto'): WebSocket first. A WebSocket attempt fails if it
 * does not open, or drops before it has been connected for `stableAfterMs`.
 * After `fallbackAfter` such failures in a row, with no stable WebSocket link
 * since the machine was made, the machine falls back to HTTP for good: a
 * network that never let a WebSocket through is taken to block them, while
 * one that once did is taken to be merely down, and keeps WebSocket.
 */
import { backoffDelay, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.js";
import { CloseCode, type CloseInfo, type TransportKind } from "./transport.js";

export type ConnectionState = "connecting" | "connected" | "suspended" | "disconnected";

export type TransportPolicy = "auto" | TransportKind;

export interface MachineOptions {
  policy: TransportPolicy;
  backoff: BackoffOptions;
  /** WebSocket failures in a row, before any stable one, that switch 'auto' to HTTP. */
  fallbackAfter: number;
  /** How long a link must stay connected to count as a success. */
  stableAfterMs: number;
  /** Where jitter comes from. */
  random: () => number;
}

export const DEFAULT_MACHINE_OPTIONS: MachineOptions = {
  policy: "auto",
  backoff: DEFAULT_BACKOFF,
  fallbackAfter: 3,
  stableAfterMs: 10_000,
  random: Math.random,
};

/** After a policy close (1008), retries start at least this far up the backoff. */
const POLICY_CLOSE_MIN_ATTEMPT = 4;

export type Action =
  | { type: "state"; state: ConnectionState }
  | { type: "open"; kind: TransportKind }
  | { type: "close" }
  | { type: "wait"; ms: number }
  | { type: "cancelWait" }
  | { type: "fallback"; from: TransportKind; to: TransportKind }
  | { type: "authLost" };

export class ConnectionMachine {
  private current: ConnectionState = "disconnected";
  private kindInUse: TransportKind;
  /** Failed attempts since the last stable link; indexes the backoff. */
  private attempt = 0;
  private wsFailures = 0;
  private wsProven = false;
  private connectedAt: number | null = null;
  private readonly options: MachineOptions;

  constructor(options: Partial<MachineOptions> = {}) {
    this.options = { ...DEFAULT_MACHINE_OPTIONS, ...options };
    this.kindInUse = this.options.policy === "http" ? "http" : "websocket";
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** The transport the next (or current) link uses. */
  get kind(): TransportKind {
    return this.kindInUse;
  }

  /** Failed attempts since the last stable link. */
  get failures(): number {
    return this.attempt;
  }

  /** Begins connecting, if not already under way. */
  start(): Action[] {
    if (this.current !== "disconnected") return [];
    this.attempt = 0;
    return this.openLink();
  }

  /** The link is open and authenticated: requests may flow. */
  ready(now: number): Action[] {
    if (this.current !== "connecting") return [];
    this.connectedAt = now;
    return this.enter("connected");
  }

  /** The link dropped, could not open, or failed its handshake. */
  failed(now: number, info: CloseInfo): Action[] {
    if (this.current !== "connecting" && this.current !== "connected") return [];
    const stable = this.connectedAt !== null && now - this.connectedAt >= this.options.stableAfterMs;
    this.connectedAt = null;
    const actions: Action[] = [];
    if (stable) {
      this.attempt = 0;
      if (this.kindInUse === "websocket") {
        this.wsProven = true;
        this.wsFailures = 0;
      }
    } else {
      this.attempt += 1;
      if (this.kindInUse === "websocket" && !this.wsProven) this.wsFailures += 1;
    }
    if (
      this.options.policy === "auto" &&
      this.kindInUse === "websocket" &&
      !this.wsProven &&
      this.wsFailures >= this.options.fallbackAfter
    ) {
      this.kindInUse = "http";
      this.attempt = 0;
      actions.push({ type: "fallback", from: "websocket", to: "http" });
    }
    if (info.code === CloseCode.UNAUTHENTICATED) actions.push({ type: "authLost" });
    // The first retry after a stable link still waits a little (attempt 0), so
    // that clients cut off by a server restart spread out.
    let attemptIndex = Math.max(0, this.attempt - 1);
    if (info.code === CloseCode.POLICY) attemptIndex = Math.max(attemptIndex, POLICY_CLOSE_MIN_ATTEMPT);
    const ms = backoffDelay(attemptIndex, this.options.backoff, this.options.random);
    actions.push(...this.enter("suspended"), { type: "wait", ms });
    return actions;
  }

  /** The scheduled retry is due. */
  timer(): Action[] {
    if (this.current !== "suspended") return [];
    return this.openLink();
  }

  /** Retries at once if suspended (the network came back, or the app asked). */
  wake(): Action[] {
    if (this.current !== "suspended") return [];
    return [{ type: "cancelWait" }, ...this.openLink()];
  }

  /** Stops: closes the link, cancels retries. */
  stop(): Action[] {
    if (this.current === "disconnected") return [];
    this.connectedAt = null;
    return [{ type: "cancelWait" }, { type: "close" }, ...this.enter("disconnected")];
  }

  private openLink(): Action[] {
    return [...this.enter("connecting"), { type: "open", kind: this.kindInUse }];
  }

  private enter(state: ConnectionState): Action[] {
    if (state === this.current) return [];
    this.current = state;
    return [{ type: "state", state }];
  }
}
