/**
 * W3C Trace Context on WAPI requests. The WAPI takes one extension member
 * beside jsonrpc/method/params/id, `"traceparent"`, and makes the edge's span
 * (and the core's) part of that trace. The `traceparent` option of Wac says
 * what each request carries; this is the helper for apps without a tracer.
 */

/** Where a request's traceparent comes from: called once per request; undefined sends none. */
export type TraceparentSource = () => string | undefined;

/**
 * A fresh W3C traceparent: version 00, a random trace id (16 bytes) and
 * parent id (8 bytes), neither all zero, flags 01 (sampled), e.g.
 * "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".
 */
export function newTraceparent(): string {
  return `00-${randomHex(16)}-${randomHex(8)}-01`;
}

function randomHex(bytes: number): string {
  const buffer = new Uint8Array(bytes);
  // All zeros is the one invalid id (W3C); at 2^-64 odds, try again.
  do globalThis.crypto.getRandomValues(buffer);
  while (buffer.every((byte) => byte === 0));
  return Array.from(buffer, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * What the source gives for one request: a non-empty string, else nothing.
 * A source that throws costs the request its trace, never the request.
 */
export function traceparentOf(source: TraceparentSource): string | undefined {
  try {
    const value = source();
    return typeof value === "string" && value !== "" ? value : undefined;
  } catch {
    return undefined;
  }
}
