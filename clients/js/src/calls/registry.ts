/**
 * CallRegistry routes call events to Call objects by call id. An event can
 * arrive before the CreateCall answer that tells the caller its call's id
 * (the callee's device may ring faster than the answer travels); while a
 * CreateCall is under way, events of unknown calls are held and replayed to
 * the call that turns out to own them.
 */
import type { Event as WacEvent } from "../gen/wac.js";
import type { Call } from "./call.js";

/** At most this many events are held per unknown call. */
const MAX_HELD_PER_CALL = 64;
/** How many ended calls are remembered, so that a replayed invitation is not taken for a new call. */
const MAX_REMEMBERED_ENDED = 256;

export class CallRegistry {
  private readonly calls = new Map<string, Call>();
  private readonly held = new Map<string, WacEvent[]>();
  private creating = 0;
  private readonly endedIds = new Set<string>();

  /** The calls not ended yet. */
  get live(): Call[] {
    return [...this.calls.values()];
  }

  get(callId: string): Call | undefined {
    return this.calls.get(callId);
  }

  /** A CreateCall is about to be sent: hold unknown events until done() is called. */
  beginCreate(): () => void {
    this.creating += 1;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.creating -= 1;
      if (this.creating === 0) this.held.clear();
    };
  }

  /** Routes a call's events to it from now on, starting with any held ones. */
  add(call: Call, deliver: (call: Call, event: WacEvent) => void): void {
    this.calls.set(call.id, call);
    const held = this.held.get(call.id) ?? [];
    this.held.delete(call.id);
    for (const event of held) deliver(call, event);
  }

  remove(call: Call): void {
    if (this.calls.get(call.id) !== call) return;
    this.calls.delete(call.id);
    this.endedIds.add(call.id);
    if (this.endedIds.size > MAX_REMEMBERED_ENDED) {
      this.endedIds.delete(this.endedIds.values().next().value as string);
    }
  }

  /**
   * Whether a call is known here, live or ended. After a resync the server
   * replays the events it still keeps, invitations to calls long over included.
   */
  knows(callId: string): boolean {
    return this.calls.has(callId) || this.endedIds.has(callId);
  }

  /** Holds an event of an unknown call if a CreateCall is under way; returns whether it did. */
  hold(callId: string, event: WacEvent): boolean {
    if (this.creating === 0) return false;
    const list = this.held.get(callId) ?? [];
    if (list.length < MAX_HELD_PER_CALL) list.push(event);
    this.held.set(callId, list);
    return true;
  }
}
