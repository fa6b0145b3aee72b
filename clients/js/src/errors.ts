/**
 * WacError: the one error type the SDK throws and rejects with. Its code is a
 * gRPC status number whatever went wrong, so that an application handles a
 * server refusal, a lost connection and a timeout the same way.
 */

/** The canonical gRPC status codes, by name. */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type StatusName = keyof typeof Status;

const NAMES: readonly StatusName[] = Object.keys(Status) as StatusName[];

/** The status name of a gRPC code; UNKNOWN for a number outside 0..16. */
export function statusName(code: number): StatusName {
  return NAMES[code] ?? "UNKNOWN";
}

/** The JSON-RPC 2.0 protocol fault codes and the gRPC status each stands for. */
export const JSON_RPC_FAULTS: Readonly<Record<number, number>> = {
  [-32700]: Status.INTERNAL, // parse error: the SDK sent something unparsable
  [-32600]: Status.INTERNAL, // invalid request
  [-32601]: Status.UNIMPLEMENTED, // method not found
  [-32602]: Status.INVALID_ARGUMENT, // invalid params
  [-32603]: Status.INTERNAL, // internal error
};

export class WacError extends Error {
  /** The gRPC status number. */
  readonly code: number;
  /** The gRPC status name, such as "NOT_FOUND". */
  readonly status: StatusName;
  /** The JSON-RPC error's data member, when the server sent one. */
  readonly data?: unknown;
  /** The JSON-RPC error code when it was not a gRPC status (a protocol fault, a rate limit). */
  readonly jsonRpcCode?: number;

  constructor(code: number, message: string, options: { data?: unknown; jsonRpcCode?: number; cause?: unknown } = {}) {
    super(message);
    this.name = "WacError";
    this.code = code;
    this.status = statusName(code);
    if (options.data !== undefined) this.data = options.data;
    if (options.jsonRpcCode !== undefined) this.jsonRpcCode = options.jsonRpcCode;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }

  /** When the server asked to wait before trying again (rate limited), in ms. */
  get retryAfterMs(): number | undefined {
    return retryAfterMs(this.data);
  }

  /** Whether this error has the given status, by name or number. */
  is(status: StatusName | number): boolean {
    return typeof status === "number" ? this.code === status : this.status === status;
  }
}

function retryAfterMs(data: unknown): number | undefined {
  const seconds = data && typeof data === "object" ? (data as { retryAfter?: unknown }).retryAfter : undefined;
  return typeof seconds === "number" && seconds >= 0 ? Math.ceil(seconds * 1000) : undefined;
}

/** The error member of a JSON-RPC response. */
export interface JsonRpcErrorObject {
  code: number;
  message?: string;
  data?: unknown;
}

/**
 * Turns a JSON-RPC error object into a WacError. A gRPC failure carries its
 * status number as the code (and its name in data.status, which wins when the
 * two disagree); a JSON-RPC protocol fault is mapped to the nearest status.
 */
export function errorFromJsonRpc(error: JsonRpcErrorObject): WacError {
  const message = typeof error.message === "string" ? error.message : "request failed";
  const data = error.data;
  const statusFromData =
    data && typeof data === "object" && typeof (data as { status?: unknown }).status === "string"
      ? (data as { status: string }).status
      : undefined;
  if (statusFromData && statusFromData in Status) {
    return new WacError(Status[statusFromData as StatusName], message, { data });
  }
  if (Number.isInteger(error.code) && error.code >= 0 && error.code <= 16) {
    return new WacError(error.code, message, { data });
  }
  const mapped = JSON_RPC_FAULTS[error.code];
  if (mapped !== undefined) return new WacError(mapped, message, { data, jsonRpcCode: error.code });
  if (retryAfterMs(data) !== undefined) {
    // The WAPI edge's rate limit (-32000 with data.retryAfter in seconds).
    return new WacError(Status.RESOURCE_EXHAUSTED, message, { data, jsonRpcCode: error.code });
  }
  // -32000..-32099 are implementation-defined server errors; anything else is unknown too.
  return new WacError(Status.UNKNOWN, message, { data, jsonRpcCode: error.code });
}

/**
 * The gRPC status for an HTTP status, when an HTTP fallback response carries
 * no JSON-RPC error (a proxy's page, for instance). Follows the mapping of
 * grpc-gateway and Envoy's transcoder, read backwards.
 */
export function statusFromHttp(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return Status.INVALID_ARGUMENT;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.NOT_FOUND;
    case 409:
      return Status.ABORTED;
    case 412:
      return Status.FAILED_PRECONDITION;
    case 413:
      return Status.RESOURCE_EXHAUSTED;
    case 429:
      return Status.RESOURCE_EXHAUSTED;
    case 499:
      return Status.CANCELLED;
    case 501:
      return Status.UNIMPLEMENTED;
    case 502:
    case 503:
      return Status.UNAVAILABLE;
    case 504:
      return Status.DEADLINE_EXCEEDED;
    default:
      return httpStatus >= 500 ? Status.INTERNAL : Status.UNKNOWN;
  }
}

/** Wraps anything thrown into a WacError, keeping WacErrors as they are. */
export function toWacError(error: unknown, fallbackCode: number = Status.UNKNOWN): WacError {
  if (error instanceof WacError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new WacError(fallbackCode, message, { cause: error });
}
