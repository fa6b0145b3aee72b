/**
 * Why a SIP call ended, in the Call API's terms: a pure function of what
 * JsSIP reported (who ended it, its cause, the final status and the Reason
 * header of a CANCEL). The reasons are the proto's `Call.EndReason`, the same
 * a WAPI call ends with; where a status says more than the reason can (403,
 * 404, 401), the error's gRPC status says it.
 */
import { Status } from "../errors.js";
import type { Call_EndReason } from "../gen/wac.js";

/** Who ended a SIP session, as JsSIP says it. */
export type SipOriginator = "local" | "remote" | "system";

export interface SipEnd {
  originator: SipOriginator;
  /** JsSIP's cause: "Terminated", "Canceled", "Busy", "Connection Error", … (JsSIP.C.causes). */
  cause: string;
  /** The final response's status, when a response ended the call. */
  status?: number;
  /** The Reason header of the request that ended it (a CANCEL says "cause=200" when answered elsewhere). */
  reasonHeader?: string;
}

export interface CallEnd {
  reason: Call_EndReason;
  /** A gRPC status for the error of the end, when the SIP status says more than the reason. */
  errorStatus?: number;
}

/** The end of a call from a final SIP status (RFC 3261 21), or null for a status that is no failure. */
export function endFromStatus(status: number): CallEnd | null {
  switch (status) {
    case 486: // Busy Here
    case 600: // Busy Everywhere
      return { reason: "BUSY" };
    case 603: // Decline
      return { reason: "REJECTED" };
    case 404: // Not Found
    case 604: // Does Not Exist Anywhere
    case 484: // Address Incomplete
      return { reason: "UNAVAILABLE", errorStatus: Status.NOT_FOUND };
    case 403: // Forbidden: the gateway refused (a number this subscriber may not call, a token for another user)
      return { reason: "FAILED", errorStatus: Status.PERMISSION_DENIED };
    case 401: // Unauthorized: the token is missing, malformed, expired or revoked
    case 407:
      return { reason: "FAILED", errorStatus: Status.UNAUTHENTICATED };
    case 480: // Temporarily Unavailable
    case 410: // Gone
    case 503: // Service Unavailable (also: the gateway could not reach wac)
      return { reason: "UNAVAILABLE" };
    case 408: // Request Timeout
    case 487: // Request Terminated: the callee's side gave up ringing
      return { reason: "NO_ANSWER" };
    default:
      return status >= 300 && status < 700 ? { reason: "FAILED" } : null;
  }
}

/** JsSIP's causes when no status tells (the session ended here, or in the transport). */
const CAUSES: Readonly<Record<string, Call_EndReason>> = {
  Terminated: "COMPLETED", // BYE
  Canceled: "CANCELLED",
  Busy: "BUSY",
  Rejected: "REJECTED",
  Unavailable: "UNAVAILABLE",
  "Not Found": "UNAVAILABLE",
  "No Answer": "NO_ANSWER",
  Expires: "NO_ANSWER",
};

/** The end of a SIP call. */
export function endFromSip(end: SipEnd): CallEnd {
  // A CANCEL that says the call was answered on another device (RFC 3326 Reason, cause 200).
  if (end.cause === "Canceled" && end.originator === "remote" && /\bcause\s*=\s*200\b/i.test(end.reasonHeader ?? "")) {
    return { reason: "ANSWERED_ELSEWHERE" };
  }
  if (end.status !== undefined && end.originator === "remote") {
    const fromStatus = endFromStatus(end.status);
    if (fromStatus) return fromStatus;
  }
  return { reason: CAUSES[end.cause] ?? "FAILED" };
}
