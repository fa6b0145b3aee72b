/** The wac JavaScript SDK. */
export { Wac, endpoints } from "./wac.js";
export type { WacOptions, WacEvents, SessionStore, SessionEndedInfo, PlaceCallOptions } from "./wac.js";
export type { GatewayOptions, SipRegistration, SipRegistrationState } from "./sip/stack.js";
export type { CallVia } from "./sip/target.js";
export { WacError, Status, statusName } from "./errors.js";
export { newTraceparent } from "./trace.js";
export type { StatusName } from "./errors.js";
export { Call } from "./calls/call.js";
export type { CallState, CallDirection, CallEvents, CallEndedInfo, MediaOptions, MediaKind } from "./calls/call.js";
export type { WebRtcEnvironment } from "./calls/webrtc.js";
export { Conference } from "./conferences/conference.js";
export type {
  ConferenceState,
  ConferenceEvents,
  ConferenceEndedInfo,
  ConferenceEndReason,
  ConferenceJoinOptions,
  RemoteParticipant,
} from "./conferences/conference.js";
export type { ConferencesApi, ConferencesEvents, CreateConferenceOptions } from "./conferences/api.js";
/** wac's record of a conference (the proto's Conference; `Conference` is the live room). */
export type { Conference as ConferenceInfo } from "./gen/wac.js";
export type { PresenceApi } from "./presence.js";
export type { ContactsApi, PageOptions } from "./contacts.js";
export type { MessagesApi, MessagesEvents, MessageTarget, SendOptions, HistoryOptions, PendingMessage, TypingState } from "./messages.js";
export type { GoogleLinkApi, GoogleLinkCallback, LinkEnvironment, LinkPopup } from "./google-link.js";
export type { ConnectionState, TransportPolicy } from "./transport/machine.js";
export type { TransportKind } from "./transport/transport.js";
export type { CallOptions } from "./rpc.js";
export type * from "./gen/wac.js";
