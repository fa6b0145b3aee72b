/**
 * wac.googleLink: link the subscriber's Google account, so that its
 * contacts are found by wac.contacts.search (by this subscriber only).
 *
 * Google sends the browser back to wac's /oauth2/google/callback, a page
 * that hands code and state to this SDK: by postMessage to the window that
 * opened the popup, or, when the whole tab went to Google, through
 * sessionStorage and a redirect to "/". The SDK then completes the link with
 * its own session; the server checks the state was this subscriber's.
 */
import type { Clock } from "./clock.js";
import { Status, WacError } from "./errors.js";
import type { GoogleLink, GoogleLinkAuthorization } from "./gen/wac.js";
import type { Requester } from "./requester.js";

/** The message the callback page sends, and keeps under STORAGE_KEY. */
export interface GoogleLinkCallback {
  type: typeof MESSAGE_TYPE;
  code?: string;
  state?: string;
  /** Google's error, e.g. "access_denied" when the user declined. */
  error?: string;
}

/** The popup as window.open returns it. */
export interface LinkPopup {
  readonly closed: boolean;
  location: { href: string };
  close(): void;
}

/** The browser pieces linking uses: the page's own window unless replaced. */
export interface LinkEnvironment {
  open(url: string, target: string, features: string): LinkPopup | null;
  /** Listens to messages posted to this window; returns the remover. */
  onMessage(listener: (origin: string, data: unknown) => void): () => void;
  /** Where the callback page leaves its message after a full-tab redirect. */
  storage?: { getItem(key: string): string | null; removeItem(key: string): void };
}

export const MESSAGE_TYPE = "wac.googleLink";
export const STORAGE_KEY = "wac.googleLink";
/** How often start() checks whether the user closed the popup. */
export const POPUP_POLL_MS = 500;

const POPUP_NAME = "wac-google-link";
const POPUP_FEATURES = "popup,width=520,height=680";

export class GoogleLinkApi {
  constructor(
    private readonly request: Requester,
    private readonly clock: Clock,
    private readonly environment: () => LinkEnvironment = browserEnvironment,
  ) {}

  /**
   * Links the account in a popup: opens it, sends it to Google's consent
   * page, waits for the callback and completes the link. Call it from a
   * click handler, or the browser blocks the popup. Rejects with CANCELLED
   * if the user declines or closes the popup, DEADLINE_EXCEEDED when the
   * authorization expires first.
   */
  async start(): Promise<GoogleLink> {
    // Opened before any await: only then does it count as the click's.
    const env = this.environment();
    const popup = env.open("about:blank", POPUP_NAME, POPUP_FEATURES);
    if (!popup) {
      throw new WacError(
        Status.FAILED_PRECONDITION,
        "the browser blocked the popup: call googleLink.start() from a click, or redirect to authorize()'s URI",
      );
    }
    let authorization: GoogleLinkAuthorization;
    try {
      authorization = await this.authorize();
    } catch (error) {
      popup.close();
      throw error;
    }
    popup.location.href = authorization.authorizationUri ?? "";
    const callback = await this.waitForCallback(env, popup, authorization);
    return this.completeWith(callback);
  }

  /** Starts a link: Google's consent page to open (or redirect the tab to) and its state. */
  authorize(): Promise<GoogleLinkAuthorization> {
    return this.request("DirectoryService.CreateGoogleLinkAuthorization", {});
  }

  /** Completes a link with the code and state the callback page received. */
  complete(code: string, state: string): Promise<GoogleLink> {
    return this.request("DirectoryService.CompleteGoogleLink", { code, state });
  }

  /**
   * After a full-tab redirect to Google: completes the link from what the
   * callback page left in sessionStorage. Null if it left nothing.
   */
  async completeRedirect(): Promise<GoogleLink | null> {
    const storage = this.environment().storage;
    const stored = storage?.getItem(STORAGE_KEY);
    if (!storage || stored == null) return null;
    storage.removeItem(STORAGE_KEY);
    let callback: unknown;
    try {
      callback = JSON.parse(stored);
    } catch {
      return null;
    }
    if (!isCallback(callback)) return null;
    return this.completeWith(callback);
  }

  /** The subscriber's link and its latest import; null if there is none. */
  async get(): Promise<GoogleLink | null> {
    try {
      return await this.request("DirectoryService.GetGoogleLink", {});
    } catch (error) {
      if (error instanceof WacError && error.code === Status.NOT_FOUND) return null;
      throw error;
    }
  }

  /** Unlinks: revokes the grant at Google and removes the imported contacts. Whether there was a link. */
  async unlink(): Promise<boolean> {
    try {
      await this.request("DirectoryService.DeleteGoogleLink", {});
      return true;
    } catch (error) {
      if (error instanceof WacError && error.code === Status.NOT_FOUND) return false;
      throw error;
    }
  }

  private completeWith(callback: GoogleLinkCallback): Promise<GoogleLink> {
    if (callback.error || !callback.code || !callback.state) {
      const reason = callback.error || "no authorization code";
      const code = reason === "access_denied" ? Status.CANCELLED : Status.FAILED_PRECONDITION;
      return Promise.reject(new WacError(code, `Google did not authorize the link: ${reason}`));
    }
    return this.complete(callback.code, callback.state);
  }

  private waitForCallback(
    env: LinkEnvironment,
    popup: LinkPopup,
    authorization: GoogleLinkAuthorization,
  ): Promise<GoogleLinkCallback> {
    const origin = callbackOrigin(authorization.authorizationUri);
    const expireAt = authorization.expireTime ? Date.parse(authorization.expireTime) : Number.NaN;
    return new Promise((resolve, reject) => {
      let timer: unknown = null;
      const finish = (outcome: () => void) => {
        removeListener();
        if (timer !== null) this.clock.clearTimeout(timer);
        outcome();
      };
      const removeListener = env.onMessage((from, data) => {
        // Only the callback page, for this authorization.
        if (from !== origin || !isCallback(data) || data.state !== authorization.state) return;
        finish(() => resolve(data));
      });
      const watch = () => {
        if (popup.closed) {
          finish(() => reject(new WacError(Status.CANCELLED, "the Google window was closed before linking finished")));
        } else if (this.clock.now() >= expireAt) {
          popup.close();
          finish(() => reject(new WacError(Status.DEADLINE_EXCEEDED, "the Google link was not completed in time")));
        } else {
          timer = this.clock.setTimeout(watch, POPUP_POLL_MS);
        }
      };
      timer = this.clock.setTimeout(watch, POPUP_POLL_MS);
    });
  }
}

/** The origin the callback page posts from: that of the redirect_uri in Google's URI. */
export function callbackOrigin(authorizationUri: string | undefined): string {
  try {
    const redirect = new URL(authorizationUri ?? "").searchParams.get("redirect_uri");
    return redirect ? new URL(redirect).origin : "";
  } catch {
    return "";
  }
}

function isCallback(data: unknown): data is GoogleLinkCallback {
  return typeof data === "object" && data !== null && (data as { type?: unknown }).type === MESSAGE_TYPE;
}

function browserEnvironment(): LinkEnvironment {
  const w = globalThis as unknown as Window;
  const storage = sessionStorageOf(w);
  return {
    open: (url, target, features) => w.open(url, target, features),
    onMessage: (listener) => {
      const handler = (event: MessageEvent) => listener(event.origin, event.data);
      w.addEventListener("message", handler);
      return () => w.removeEventListener("message", handler);
    },
    ...(storage ? { storage } : {}),
  };
}

function sessionStorageOf(w: Window): Storage | undefined {
  try {
    return w.sessionStorage ?? undefined;
  } catch {
    return undefined; // a sandboxed frame: reading it throws
  }
}
