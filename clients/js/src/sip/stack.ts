/**
 * SipStack: this device's registration at the gateway, over SIP over
 * WebSocket (RFC 7118), authenticated by the session's access token as an
 * RFC 8898 bearer token. JsSIP keeps the registration up; before each
 * re-REGISTER the stack puts the freshest token in place, and every request
 * after a session refresh carries the new one.
 */
import { Emitter } from "../emitter.js";
import { Status, WacError, toWacError } from "../errors.js";
import type { SipEventArgument, SipMediaOptions, SipSession, SipUa, SipUaFactory } from "./ua.js";

/** Where the gateway is. */
export interface GatewayOptions {
  /** Its WebSocket URL: "wss://wac.example.com/sip" (the front door's /sip, subprotocol "sip"). */
  url: string;
  /** Its SIP domain: users register as sip:<username>@<domain>. */
  domain: string;
  /** The REGISTER's Expires, in seconds (600). JsSIP re-registers about halfway through. */
  registerExpires?: number;
}

export type SipRegistrationState = "registering" | "registered" | "unregistered" | "failed";

export interface SipRegistration {
  state: SipRegistrationState;
  /** Why it is not registered (JsSIP's cause: "Authentication Error", "Connection Error", …). */
  reason?: string;
  /** The REGISTER's final status when the gateway refused it (401, 403, 503, …). */
  status?: number;
}

export interface SipStackEvents {
  /** The registration changed. */
  registration: SipRegistration;
  /** A call arrived from the gateway. */
  incoming: SipSession;
  /** Something failed that no caller awaits (a token that could not be refreshed). */
  error: WacError;
}

export interface SipStackOptions {
  /** A usable access token, refreshing the session first if it is about to expire. */
  token(): Promise<string>;
  createUa: SipUaFactory;
}

const DEFAULT_REGISTER_EXPIRES = 600;

/** The Authorization header's value for an access token (RFC 8898 section 3). */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

export class SipStack extends Emitter<SipStackEvents> {
  private ua: SipUa | null = null;
  private current: SipRegistration = { state: "unregistered" };

  constructor(
    readonly gateway: GatewayOptions,
    private readonly options: SipStackOptions,
  ) {
    super();
  }

  get registration(): SipRegistration {
    return this.current;
  }

  get started(): boolean {
    return this.ua !== null;
  }

  /** Connects and registers as `username` with `token`; idempotent. */
  start(username: string, token: string): void {
    if (this.ua) return;
    const ua = this.options.createUa({
      url: this.gateway.url,
      uri: `sip:${username}@${this.gateway.domain}`,
      authorization: bearer(token),
      registerExpires: this.gateway.registerExpires ?? DEFAULT_REGISTER_EXPIRES,
    });
    this.ua = ua;
    const mine = (listener: (event: SipEventArgument) => void) => (event: SipEventArgument) => {
      if (this.ua === ua) listener(event);
    };
    ua.on("registered", mine(() => this.setRegistration({ state: "registered" })));
    ua.on("unregistered", mine((event) => this.setRegistration(unregistered("unregistered", event))));
    ua.on("registrationFailed", mine((event) => this.setRegistration(unregistered("failed", event))));
    // With a listener here JsSIP leaves the re-REGISTER to us: the token goes in first.
    ua.on("registrationExpiring", mine(() => void this.reRegister(ua)));
    ua.on(
      "newRTCSession",
      mine((event) => {
        if (event.originator === "remote" && event.session) this.emit("incoming", event.session);
      }),
    );
    this.setRegistration({ state: "registering" });
    ua.start();
  }

  /**
   * The session's tokens were refreshed: every request from now on carries
   * the new one. A registration the gateway refused for its token (401: it
   * expired while wac was unreachable) is tried again with it.
   */
  setToken(token: string): void {
    const ua = this.ua;
    if (!ua) return;
    ua.set("authorization_jwt", bearer(token));
    if (this.current.state === "failed" && this.current.status === 401) {
      this.setRegistration({ state: "registering" });
      ua.register();
    }
  }

  /** Sends an INVITE; JsSIP makes the peer connection with `options`. */
  call(uri: string, options: SipMediaOptions): SipSession {
    if (!this.ua) throw new WacError(Status.FAILED_PRECONDITION, "the gateway is not connected: log in first");
    try {
      return this.ua.call(uri, options);
    } catch (error) {
      throw toWacError(error, Status.INVALID_ARGUMENT);
    }
  }

  /** Unregisters and disconnects. */
  stop(): void {
    const ua = this.ua;
    if (!ua) return;
    this.ua = null;
    try {
      ua.stop();
    } finally {
      this.setRegistration({ state: "unregistered", reason: "stopped" });
    }
  }

  private async reRegister(ua: SipUa): Promise<void> {
    try {
      const token = await this.options.token();
      if (this.ua === ua) ua.set("authorization_jwt", bearer(token));
    } catch (error) {
      // The token in place may still do; the gateway says otherwise and the registration state shows it.
      this.emit("error", toWacError(error));
    }
    if (this.ua === ua) ua.register();
  }

  private setRegistration(next: SipRegistration): void {
    const previous = this.current;
    if (previous.state === next.state && previous.reason === next.reason && previous.status === next.status) return;
    this.current = next;
    this.emit("registration", next);
  }
}

function unregistered(state: "unregistered" | "failed", event: SipEventArgument): SipRegistration {
  const status = event.response?.status_code;
  return { state, ...(event.cause ? { reason: event.cause } : {}), ...(status ? { status } : {}) };
}
