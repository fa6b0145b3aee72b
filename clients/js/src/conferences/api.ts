/**
 * wac.conferences: multi-party conferences. wac keeps who is invited and
 * who is in the room; the media goes through Janus (the VideoRoom plugin),
 * which `join()` reaches with what wac hands out (see conference.ts).
 */
import { Emitter } from "../emitter.js";
import { Status, WacError } from "../errors.js";
import type {
  Conference as ConferenceInfo,
  Conference_Media,
  ConferenceEnded,
  ConferenceInvited,
  ConferenceParticipantJoined,
  ConferenceParticipantLeft,
  Event as WacEvent,
  ListConferencesResponse,
} from "../gen/wac.js";
import type { PageOptions } from "../contacts.js";
import { Conference, type ConferenceHost, type ConferenceJoinOptions } from "./conference.js";

export interface CreateConferenceOptions {
  /** What it is about, 1 to 200 characters. */
  title: string;
  /** The usernames to invite (at most 50); each one's devices get `invited`. */
  invitees?: string[];
  /** "AUDIO" (the default) or "AUDIO_VIDEO". */
  media?: Conference_Media;
}

/** The WAPI's conference events, as wac.conferences re-emits them. */
export interface ConferencesEvents {
  /** This user was invited to a conference (join it with `join(invited.conference.conferenceId)`). */
  invited: ConferenceInvited;
  /** A member entered the room of a conference this user is in or invited to. */
  participantJoined: ConferenceParticipantJoined;
  /** A member left such a room. */
  participantLeft: ConferenceParticipantLeft;
  /** Such a conference ended. */
  ended: ConferenceEnded;
}

/** What wac.conferences needs from the Wac: a Conference's host, but for `forget`, which it keeps itself. */
export type ConferencesHost = Omit<ConferenceHost, "forget">;

export class ConferencesApi extends Emitter<ConferencesEvents> {
  private readonly live = new Map<string, Conference>();
  private readonly host: ConferenceHost;

  /** @internal Made by Wac. */
  constructor(host: ConferencesHost) {
    super();
    this.host = {
      ...host,
      forget: (conference) => {
        if (this.live.get(conference.id) === conference) this.live.delete(conference.id);
      },
    };
  }

  /** The conferences this device is in (or joining). */
  get joined(): Conference[] {
    return [...this.live.values()];
  }

  /** Opens a conference and invites; its creator may join it at once. */
  create(options: CreateConferenceOptions): Promise<ConferenceInfo> {
    return this.host.request("ConferencesService.CreateConference", {
      title: options.title,
      ...(options.invitees?.length ? { invitees: options.invitees } : {}),
      ...(options.media ? { media: options.media } : {}),
    });
  }

  /** Invites more users (the creator only). */
  invite(conferenceId: string, usernames: string[]): Promise<ConferenceInfo> {
    return this.host.request("ConferencesService.InviteToConference", { conferenceId, invitees: usernames });
  }

  /** The conferences this user created or is invited to: active ones first, newest first. */
  list(options: PageOptions = {}): Promise<ListConferencesResponse> {
    return this.host.request("ConferencesService.ListConferences", options);
  }

  /** Ends a conference for everyone (its creator). This device, if in its room, is out with reason "ended". */
  async end(conferenceId: string): Promise<ConferenceInfo> {
    const info = await this.host.request("ConferencesService.EndConference", { conferenceId });
    this.live.get(conferenceId)?.handleEnded(info);
    return info;
  }

  /**
   * Enters the conference's room with this device's media and resolves once
   * it publishes: `localStream`, and the participants there now in
   * `participants` (their streams follow, `participantStream`).
   */
  async join(conferenceId: string, options: ConferenceJoinOptions = {}): Promise<Conference> {
    if (this.live.has(conferenceId)) throw new WacError(Status.FAILED_PRECONDITION, "this device is already in that conference");
    const conference = new Conference(this.host, conferenceId);
    this.live.set(conferenceId, conference);
    await conference.start(options);
    return conference;
  }

  /** @internal An event from the session's stream; whether it was a conference's. */
  handleEvent(event: WacEvent): boolean {
    const id =
      event.conferenceInvited?.conference?.conferenceId ??
      event.conferenceParticipantJoined?.conference?.conferenceId ??
      event.conferenceParticipantLeft?.conference?.conferenceId ??
      event.conferenceEnded?.conference?.conferenceId;
    const conferenceEvent =
      event.conferenceInvited ?? event.conferenceParticipantJoined ?? event.conferenceParticipantLeft ?? event.conferenceEnded;
    if (!conferenceEvent) return false;
    if (id) this.live.get(id)?.handleEvent(event);
    if (event.conferenceInvited) this.emit("invited", event.conferenceInvited);
    else if (event.conferenceParticipantJoined) this.emit("participantJoined", event.conferenceParticipantJoined);
    else if (event.conferenceParticipantLeft) this.emit("participantLeft", event.conferenceParticipantLeft);
    else if (event.conferenceEnded) this.emit("ended", event.conferenceEnded);
    return true;
  }

  /** @internal The session's tokens were refreshed: the rooms' Janus tokens too. */
  refreshTokens(): void {
    for (const conference of this.live.values()) conference.refreshToken();
  }

  /** @internal Logout: leave every room. */
  async leaveAll(): Promise<void> {
    await Promise.allSettled(this.joined.map((conference) => conference.leave()));
  }

  /** @internal The session ended: out of every room here (wac takes the session out of them itself). */
  terminateAll(error: WacError): void {
    for (const conference of this.joined) conference.terminate(error);
  }
}
