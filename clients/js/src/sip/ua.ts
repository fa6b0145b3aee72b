/**
 * The part of JsSIP the SIP stack uses, as small interfaces: the stack and
 * its calls are written against these, the browser gets JsSIP's UA, and the
 * unit tests a fake.
 */
import { type Socket, UA, WebSocketInterface } from "jssip";

/** A JsSIP event's argument, read through the fields the SDK needs. */
export interface SipEventArgument {
  originator?: "local" | "remote" | "system";
  cause?: string;
  /** A response ({status_code}) or a request ({getHeader}). */
  message?: { status_code?: number; getHeader?(name: string): string | undefined } | null;
  response?: { status_code?: number } | null;
  peerconnection?: RTCPeerConnection;
  session?: SipSession;
}

export type SipListener = (event: SipEventArgument) => void;

/** JsSIP's RTCSession, as the SDK uses it. */
export interface SipSession {
  readonly id: string;
  readonly direction: "incoming" | "outgoing";
  readonly connection: RTCPeerConnection | null | undefined;
  readonly remote_identity: { display_name?: string | null; uri: { user?: string | null; host?: string; toString(): string } };
  on(event: string, listener: SipListener): unknown;
  answer(options: SipMediaOptions): void;
  terminate(options?: { status_code?: number; reason_phrase?: string }): void;
  hold(options?: object, done?: () => void): boolean;
  unhold(options?: object, done?: () => void): boolean;
  renegotiate(options?: { rtcOfferConstraints?: RTCOfferOptions }, done?: () => void): boolean;
  sendDTMF(tones: string, options?: { duration?: number; interToneGap?: number; transportType?: string }): void;
  isEnded(): boolean;
}

/** What JsSIP's call() and answer() are given: the SDK's media and ICE servers. */
export interface SipMediaOptions {
  mediaStream?: MediaStream;
  mediaConstraints?: MediaStreamConstraints;
  pcConfig?: RTCConfiguration;
  rtcOfferConstraints?: RTCOfferOptions;
  /** For call(): listeners attached before JsSIP emits anything (it makes the peer connection synchronously). */
  eventHandlers?: Record<string, SipListener>;
}

/** JsSIP's UA, as the SDK uses it. */
export interface SipUa {
  on(event: string, listener: SipListener): unknown;
  start(): void;
  stop(): void;
  register(): void;
  set(parameter: "authorization_jwt", value: string): boolean;
  call(target: string, options: SipMediaOptions): SipSession;
  isRegistered(): boolean;
}

export interface SipUaConfig {
  /** The gateway's WebSocket URL (ws(s)://host/sip); JsSIP asks for the "sip" subprotocol (RFC 7118). */
  url: string;
  /** This user's address of record: sip:alice@domain. */
  uri: string;
  /** The Authorization header's value: "Bearer <access token>" (RFC 8898). */
  authorization: string;
  /** The REGISTER's Expires, in seconds. */
  registerExpires: number;
}

export type SipUaFactory = (config: SipUaConfig) => SipUa;

/** What JsSIP carries SIP over, for a gateway URL: its WebSocket by default (any JsSIP.Socket). */
export type SipSocketFactory = (url: string) => Socket;

/** JsSIP's UA, over the sockets `createSocket` makes. */
export function jssipUaFactory(createSocket: SipSocketFactory = (url) => new WebSocketInterface(url)): SipUaFactory {
  return (config) =>
    new UA({
      sockets: [createSocket(config.url)],
      uri: config.uri,
      // JsSIP writes it verbatim as the Authorization header of every request it sends.
      authorization_jwt: config.authorization,
      register: true,
      register_expires: config.registerExpires,
      user_agent: "wac-sdk",
    }) as unknown as SipUa;
}

/** JsSIP's UA over a WebSocket. */
export const jssipUa: SipUaFactory = jssipUaFactory();
