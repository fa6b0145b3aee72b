import type { Presence, Presence_Status } from "./gen/wac.js";
import type { Requester } from "./requester.js";

/** The most usernames one BatchGetPresence accepts. */
export const PRESENCE_BATCH_LIMIT = 500;

/** wac.presence: publish this device's status and read others'. */
export class PresenceApi {
  constructor(private readonly request: Requester) {}

  /** Publishes this device's status and note; returns the subscriber's aggregated presence. */
  set(status: Presence_Status, note?: string): Promise<Presence> {
    return this.request("PresenceService.SetPresence", note === undefined ? { status } : { status, note });
  }

  /**
   * Reads the presence of subscribers (BatchGetPresence, in batches of 500).
   * Subscribers hidden by the visibility policy are left out.
   */
  get(usernames: string[]): Promise<Presence[]>;
  /** Reads one subscriber's presence; undefined if hidden or unknown. */
  get(username: string): Promise<Presence | undefined>;
  async get(users: string | string[]): Promise<Presence[] | Presence | undefined> {
    const usernames = typeof users === "string" ? [users] : users;
    const batches: Promise<Presence[]>[] = [];
    for (let i = 0; i < usernames.length; i += PRESENCE_BATCH_LIMIT) {
      const slice = usernames.slice(i, i + PRESENCE_BATCH_LIMIT);
      batches.push(
        this.request("PresenceService.BatchGetPresence", { usernames: slice }).then((r) => r.presences ?? []),
      );
    }
    const presences = (await Promise.all(batches)).flat();
    return typeof users === "string" ? presences[0] : presences;
  }
}
