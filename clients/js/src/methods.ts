import type { MethodName } from "./gen/wac.js";

/**
 * Methods the server may run twice without harm: a request to one of them
 * that was in flight when the link dropped is sent again, once, on the next
 * link. Every other request fails with UNAVAILABLE instead, because running
 * it twice could do something twice (create two contacts, answer a call that
 * was answered) or, for RefreshSession, revoke the session for token reuse.
 */
export const RETRYABLE_METHODS: ReadonlySet<MethodName> = new Set<MethodName>([
  "PresenceService.SetPresence",
  "PresenceService.GetPresence",
  "PresenceService.BatchGetPresence",
  "ContactsService.GetContact",
  "ContactsService.ListContacts",
  "ContactsService.UpdateContact",
  "DirectoryService.SearchDirectory",
  "DirectoryService.GetGoogleLink",
  "CallsService.HangupCall",
  "CallsService.SendIceCandidate",
  "CallsService.GetCall",
  "CallsService.ListCalls",
  "CallsService.GetIceServers",
  // Joining again from the same device keeps its place (a fresh token); leaving twice leaves once.
  "ConferencesService.JoinConference",
  "ConferencesService.LeaveConference",
  "ConferencesService.ListConferences",
  // A send carries the client's requestId: the same one again answers the message it made.
  "MessagesService.SendMessage",
  "MessagesService.GetConversation",
  "MessagesService.ListConversations",
  "MessagesService.ListMessages",
  "MessagesService.MarkRead",
  "MessagesService.BlockSubscriber",
  "MessagesService.UnblockSubscriber",
  "MessagesService.ListBlockedSubscribers",
]);
