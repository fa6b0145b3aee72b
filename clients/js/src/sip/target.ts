/**
 * Which stack a call target goes over, and the SIP request URI it becomes:
 * pure functions of the target, the caller's choice and the gateway's domain.
 */

/** The signalling stacks behind `wac.call()`. */
export type CallVia = "wapi" | "sip";

/** RFC 3966 visual separators, allowed in a typed number and dropped from the URI. */
const VISUAL_SEPARATORS = /[\s().-]/g;
/** E.164: a "+", a non-zero country code digit, at most 15 digits in all. */
const E164 = /^\+[1-9]\d{0,14}$/;

/** The number a target denotes ("+34600111222"), if it is one: E.164 with optional separators. */
export function e164(target: string): string | null {
  const trimmed = target.trim();
  if (!trimmed.startsWith("+")) return null;
  const number = trimmed.replace(VISUAL_SEPARATORS, "");
  return E164.test(number) ? number : null;
}

/**
 * The stack a target goes over: an E.164 number, a tel: URI or a sip:/sips:
 * URI over the gateway, anything else (a wac username) over the WAPI; `via`
 * overrides.
 */
export function routeOf(target: string, via?: CallVia): CallVia {
  if (via) return via;
  if (e164(target) !== null || /^(tel|sips?):/i.test(target.trim())) return "sip";
  return "wapi";
}

/**
 * The SIP request URI of a target, for a gateway whose domain is `domain`.
 * A number becomes `sip:+34600111222@domain;user=phone` (RFC 3261 19.1.6:
 * the user part is a telephone number); a tel: URI the same, its parameters
 * dropped; a sip:/sips: URI is used as it is; a bare name is a subscriber of
 * the domain. Returns null for a target that cannot be a SIP URI.
 */
export function sipUri(target: string, domain: string): string | null {
  const trimmed = target.trim();
  if (/^sips?:/i.test(trimmed)) return /^sips?:[^\s@]+(@[^\s@]+)?$/i.test(trimmed) ? trimmed : null;
  let number = e164(trimmed);
  if (number === null && /^tel:/i.test(trimmed)) {
    // "tel:+34-600-111-222;phone-context=…": the number is what precedes the parameters.
    const digits = (trimmed.slice(4).split(";")[0] ?? "").replace(VISUAL_SEPARATORS, "");
    number = /^\+?\d{1,15}$/.test(digits) && digits !== "+" ? digits : null;
  }
  if (number !== null) return `sip:${number}@${domain};user=phone`;
  if (/^[A-Za-z0-9_.!~*'()&=+$,;?/-]+$/.test(trimmed) && !trimmed.includes(":")) return `sip:${trimmed}@${domain}`;
  return null;
}
