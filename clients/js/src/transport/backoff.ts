/** Reconnection delays: exponential, capped, with jitter. */

export interface BackoffOptions {
  /** The ceiling of the first delay, in ms. */
  initialMs: number;
  /** The largest delay, in ms. */
  maxMs: number;
  /** How much the ceiling grows per failed attempt. */
  multiplier: number;
  /**
   * The share of the ceiling that is random, 0 to 1: a delay falls between
   * ceiling × (1 − jitter) and the ceiling, so that clients cut off together
   * (a server restart) do not come back together.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, multiplier: 2, jitter: 0.5 };

/** The delay before reconnection attempt number `attempt` (0 for the first). */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxMs, options.initialMs * options.multiplier ** Math.max(0, attempt));
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.round(ceiling * (1 - jitter * random()));
}
