/**
 * Token rules, as pure functions of a Session and the current time: when to
 * refresh, and whether a token may still be presented.
 */
import type { Session } from "./gen/wac.js";

/** Refresh this long before the access token expires. */
export const REFRESH_LEAD_MS = 60_000;
/** Present an access token only if it stays valid at least this long. */
export const TOKEN_MARGIN_MS = 10_000;
/** After a refresh failed for a passing reason, try again this much later. */
export const REFRESH_RETRY_MS = 10_000;

/** Milliseconds since the epoch of an RFC 3339 time, or null if absent or malformed. */
export function parseTime(time: string | undefined): number | null {
  if (!time) return null;
  const ms = Date.parse(time);
  return Number.isNaN(ms) ? null : ms;
}

/** Milliseconds of a proto3 JSON Duration such as "3600s" or "1.5s", or null. */
export function parseDuration(duration: string | undefined): number | null {
  if (!duration) return null;
  const match = /^(-?\d+(?:\.\d+)?)s$/.exec(duration);
  return match ? Math.round(Number(match[1]) * 1000) : null;
}

/** How long to wait before refreshing the session; null if it does not expire. */
export function refreshDelay(session: Session, now: number, leadMs: number = REFRESH_LEAD_MS): number | null {
  const expiry = parseTime(session.expireTime);
  if (expiry === null) return null;
  return Math.max(0, expiry - leadMs - now);
}

/** Whether the access token can be presented now. */
export function accessTokenUsable(session: Session | null, now: number): boolean {
  if (!session?.accessToken) return false;
  const expiry = parseTime(session.expireTime);
  return expiry === null || expiry - now >= TOKEN_MARGIN_MS;
}

/** Whether the refresh token can still be traded for a new session. */
export function refreshTokenUsable(session: Session | null, now: number): boolean {
  if (!session?.refreshToken) return false;
  const expiry = parseTime(session.refreshExpireTime);
  return expiry === null || expiry > now;
}

/** A refreshed session: the server's answer, with anything it left out kept from before. */
export function mergeSession(previous: Session | null, next: Session): Session {
  return { ...(previous ?? {}), ...next };
}
