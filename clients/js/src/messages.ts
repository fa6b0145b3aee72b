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
}

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

  /** @internal Made by Wac. */
  constructor(
    private readonly request: Requester,
    private readonly random: () => number = Math.random,
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
    if (event.messageReceived) this.emit("received", event.messageReceived);
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

  /** @internal The session ended: the queued sends fail with its reason. */
  abandon(error: WacError): void {
    const waiting = [...this.outbox.values()];
    this.outbox.clear();
    for (const outgoing of waiting) outgoing.reject(error);
    if (waiting.length) this.emit("pending", []);
  }

  private attempt(requestId: string): void {
    const outgoing = this.outbox.get(requestId);
    if (!outgoing || outgoing.inFlight) return;
    outgoing.inFlight = true;
    const { target, text } = outgoing.pending;
    const params = "to" in target ? { recipient: target.to, text, requestId } : { conversationId: target.conversationId, text, requestId };
    this.request("MessagesService.SendMessage", params).then(
      (message) => this.settle(requestId, () => outgoing.resolve(message)),
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
