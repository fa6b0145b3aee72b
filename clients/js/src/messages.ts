import { type Clock, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { Status, type WacError, toWacError } from "./errors.js";
import type {
  Conversation,
  ConversationChanged,
  ListConversationsResponse,
  ListMessagesResponse,
  Message,
  MessageDeleted,
  MessageRead,
  MessageReceived,
  Typing,
  Event as WacEvent,
} from "./gen/wac.js";
import type { PageOptions } from "./contacts.js";
import type { Requester } from "./requester.js";

/** Where a message goes: a subscriber (its one-to-one conversation) or a conversation. */
export type MessageTarget = { to: string } | { conversationId: string };

export interface SendOptions {
  /** The send's idempotency key; a fresh UUID by default. The same key again is the same message. */
  requestId?: string;
}

export interface HistoryOptions extends PageOptions {
  /** The messages after this seq, oldest first (catch-up); else the newest first. */
  afterSeq?: string | number;
}

/** A send not yet taken by wac: the UI shows it as sending. */
export interface PendingMessage {
  requestId: string;
  target: MessageTarget;
  text: string;
}

export interface MessagesEvents {
  /** A message in one of this user's conversations (its own from another device: `message.requestId` set). */
  received: MessageReceived;
  /** A member read up to a message (this user too, on another device). */
  read: MessageRead;
  /** An operator deleted a message for everyone. */
  deleted: MessageDeleted;
  /** A conversation was made, renamed, or its members changed. */
  conversationChanged: ConversationChanged;
  /** The sends waiting for wac changed (one queued, or taken). */
  pending: PendingMessage[];
  /** Who is typing in a conversation changed: the members typing there now (empty: nobody). */
  typing: TypingState;
}

/** Who types in a conversation, as the `typing` event and `typingIn()` tell. */
export interface TypingState {
  conversationId: string;
  usernames: string[];
}

/** How often a user who keeps typing says so again: well within wac's 6 s. */
export const TYPING_REFRESH_MS = 3_000;
/** How long a typing event is shown when wac says nothing of it (older wac). */
const TYPING_DEFAULT_MS = 6_000;

interface Outgoing {
  pending: PendingMessage;
  resolve: (message: Message) => void;
  reject: (error: WacError) => void;
  inFlight: boolean;
}

/** Failures a later attempt may overcome: wac out of reach, or the answer lost on the way. */
const TRANSIENT: ReadonlySet<number> = new Set([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]);

/**
 * wac.messages: chat. A send is queued until wac takes it: one made while
 * the connection is down, or that fails because wac is out of reach, is
 * sent again, with the same requestId, each time the connection comes back
 * (wac answers a repeated requestId with the message it made, so nothing
 * is sent twice), until wac answers or the session ends.
 */
export class MessagesApi extends Emitter<MessagesEvents> {
  private readonly outbox = new Map<string, Outgoing>();
  /** conversationId -> username -> the timer that ends its typing. */
  private readonly typers = new Map<string, Map<string, unknown>>();
  /** conversationId -> when this user last said it types there. */
  private readonly saidTyping = new Map<string, number>();

  /** @internal Made by Wac. */
  constructor(
    private readonly request: Requester,
    private readonly random: () => number = Math.random,
    private readonly clock: Clock = systemClock,
  ) {
    super();
  }

  /** The sends wac has not taken yet, oldest first. */
  get pending(): PendingMessage[] {
    return [...this.outbox.values()].map((o) => o.pending);
  }

  /** Sends a text; resolves with the message once wac took it (perhaps after a reconnection). */
  send(target: MessageTarget, text: string, options: SendOptions = {}): Promise<Message> {
    const requestId = options.requestId ?? uuid(this.random);
    const existing = this.outbox.get(requestId);
    if (existing) return new Promise((resolve, reject) => this.chain(existing, resolve, reject));
    return new Promise<Message>((resolve, reject) => {
      this.outbox.set(requestId, { pending: { requestId, target, text }, resolve, reject, inFlight: false });
      this.emit("pending", this.pending);
      this.attempt(requestId);
    });
  }

  /** This user's conversations, the newest activity first, with unread counts and last messages. */
  conversations(options: PageOptions = {}): Promise<ListConversationsResponse> {
    return this.request("MessagesService.ListConversations", options);
  }

  conversation(conversationId: string): Promise<Conversation> {
    return this.request("MessagesService.GetConversation", { conversationId });
  }

  /** A page of a conversation's messages: the newest first, or (afterSeq) the ones after it, oldest first. */
  history(conversationId: string, options: HistoryOptions = {}): Promise<ListMessagesResponse> {
    const { afterSeq, ...page } = options;
    return this.request("MessagesService.ListMessages", {
      conversationId,
      ...page,
      ...(afterSeq !== undefined ? { afterSeq: String(afterSeq) } : {}),
    });
  }

  /** Marks the messages up to this one read; the others get a receipt. */
  markRead(conversationId: string, messageId: string): Promise<Conversation> {
    return this.request("MessagesService.MarkRead", { conversationId, messageId });
  }

  /**
   * Tells the other members this user types in a conversation (call it on
   * each keystroke: it goes to wac at most every 3 s), or stopped
   * (`active` false: only if it said it was typing). Never queued: a
   * typing sign that cannot go now is worthless later.
   */
  async typing(conversationId: string, active = true): Promise<void> {
    const now = this.clock.now();
    const said = this.saidTyping.get(conversationId);
    if (active) {
      if (said !== undefined && now - said < TYPING_REFRESH_MS) return;
      this.saidTyping.set(conversationId, now);
    } else {
      if (said === undefined) return;
      this.saidTyping.delete(conversationId);
    }
    await this.request("MessagesService.SetTyping", { conversationId, typing: active });
  }

  /** The members typing in a conversation now. */
  typingIn(conversationId: string): string[] {
    return [...(this.typers.get(conversationId)?.keys() ?? [])];
  }

  /** Makes a group this user owns. */
  createGroup(title: string, members: string[]): Promise<Conversation> {
    return this.request("MessagesService.CreateConversation", { title, members });
  }

  rename(conversationId: string, title: string): Promise<Conversation> {
    return this.request("MessagesService.UpdateConversation", { conversationId, title });
  }

  addMembers(conversationId: string, members: string[]): Promise<Conversation> {
    return this.request("MessagesService.AddConversationMembers", { conversationId, members });
  }

  /** Takes members out of a group (the owner), or this user itself (leaving). */
  removeMembers(conversationId: string, members: string[]): Promise<Conversation> {
    return this.request("MessagesService.RemoveConversationMembers", { conversationId, members });
  }

  async block(username: string): Promise<string[]> {
    return (await this.request("MessagesService.BlockSubscriber", { username })).usernames ?? [];
  }

  async unblock(username: string): Promise<string[]> {
    return (await this.request("MessagesService.UnblockSubscriber", { username })).usernames ?? [];
  }

  async blocked(): Promise<string[]> {
    return (await this.request("MessagesService.ListBlockedSubscribers", {})).usernames ?? [];
  }

  /** @internal An event from the session's stream; whether it was chat's. */
  handleEvent(event: WacEvent): boolean {
    if (event.messageReceived) {
      // A message ends its sender's typing there.
      const { message } = event.messageReceived;
      if (message?.conversationId && message.sender) this.stopTyper(message.conversationId, message.sender);
      this.emit("received", event.messageReceived);
    } else if (event.typing) this.onTyping(event.typing, event.time);
    else if (event.messageRead) this.emit("read", event.messageRead);
    else if (event.messageDeleted) this.emit("deleted", event.messageDeleted);
    else if (event.conversationChanged) this.emit("conversationChanged", event.conversationChanged);
    else return false;
    return true;
  }

  /** @internal The connection is back: the queued sends go again. */
  resend(): void {
    for (const requestId of this.outbox.keys()) this.attempt(requestId);
  }

  /** @internal The session ended: the queued sends fail with its reason; nobody types any more. */
  abandon(error: WacError): void {
    for (const [conversationId, typers] of [...this.typers]) {
      for (const username of [...typers.keys()]) this.stopTyper(conversationId, username);
    }
    this.saidTyping.clear();
    const waiting = [...this.outbox.values()];
    this.outbox.clear();
    for (const outgoing of waiting) outgoing.reject(error);
    if (waiting.length) this.emit("pending", []);
  }

  private onTyping(typing: Typing, time: string | undefined): void {
    const { conversationId, username } = typing;
    if (!conversationId || !username) return;
    if (!typing.typing) {
      this.stopTyper(conversationId, username);
      return;
    }
    // How long wac says to show it, timed from now: the two clocks never meet.
    const span = time && typing.expireTime ? Date.parse(typing.expireTime) - Date.parse(time) : NaN;
    const ms = Number.isFinite(span) && span > 0 ? Math.min(span, 60_000) : TYPING_DEFAULT_MS;
    const typers = this.typers.get(conversationId) ?? new Map<string, unknown>();
    this.typers.set(conversationId, typers);
    const known = typers.has(username);
    if (known) this.clock.clearTimeout(typers.get(username));
    typers.set(
      username,
      this.clock.setTimeout(() => this.stopTyper(conversationId, username), ms),
    );
    if (!known) this.emit("typing", { conversationId, usernames: this.typingIn(conversationId) });
  }

  private stopTyper(conversationId: string, username: string): void {
    const typers = this.typers.get(conversationId);
    if (!typers?.has(username)) return;
    this.clock.clearTimeout(typers.get(username));
    typers.delete(username);
    if (!typers.size) this.typers.delete(conversationId);
    this.emit("typing", { conversationId, usernames: this.typingIn(conversationId) });
  }

  private attempt(requestId: string): void {
    const outgoing = this.outbox.get(requestId);
    if (!outgoing || outgoing.inFlight) return;
    outgoing.inFlight = true;
    const { target, text } = outgoing.pending;
    const params = "to" in target ? { recipient: target.to, text, requestId } : { conversationId: target.conversationId, text, requestId };
    this.request("MessagesService.SendMessage", params).then(
      (message) => {
        if (message.conversationId) this.saidTyping.delete(message.conversationId);
        this.settle(requestId, () => outgoing.resolve(message));
      },
      (error: unknown) => {
        const wacError = toWacError(error);
        outgoing.inFlight = false;
        if (TRANSIENT.has(wacError.code)) return; // stays queued for the next connection
        this.settle(requestId, () => outgoing.reject(wacError));
      },
    );
  }

  private settle(requestId: string, done: () => void): void {
    if (!this.outbox.delete(requestId)) return;
    done();
    this.emit("pending", this.pending);
  }

  private chain(outgoing: Outgoing, resolve: (message: Message) => void, reject: (error: WacError) => void): void {
    const [first, firstReject] = [outgoing.resolve, outgoing.reject];
    outgoing.resolve = (message) => {
      first(message);
      resolve(message);
    };
    outgoing.reject = (error) => {
      firstReject(error);
      reject(error);
    };
  }
}

/** A random RFC 4122 version 4 UUID: crypto's where the page has it (a secure context), else from ``random``. */
function uuid(random: () => number): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  const hex = Array.from({ length: 32 }, () => Math.floor(random() * 16).toString(16));
  hex[12] = "4";
  hex[16] = ((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  const s = hex.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}
