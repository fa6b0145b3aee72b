/**
 * EventCursor remembers the last event seq the session saw, so that a
 * resubscription asks only for what was missed and a replayed event is not
 * delivered twice.
 */
export class EventCursor {
  private last: bigint | null = null;

  /** The afterSeq for the next Subscribe: the last seq seen, "0" if none. */
  get afterSeq(): string {
    return (this.last ?? 0n).toString();
  }

  /**
   * Whether an event with this seq is new; records it if so. An event
   * without a usable seq is delivered but does not move the cursor.
   */
  accept(seq: string | number | undefined): boolean {
    let value: bigint;
    try {
      if (seq === undefined || seq === "") return true;
      value = BigInt(seq);
    } catch {
      return true;
    }
    if (this.last !== null && value <= this.last) return false;
    this.last = value;
    return true;
  }

  /** Forgets the position (after OUT_OF_RANGE, or for a new session). */
  reset(): void {
    this.last = null;
  }
}
