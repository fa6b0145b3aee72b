import type { MethodName, Methods } from "./gen/wac.js";
import type { CallOptions } from "./rpc.js";

/** Sends one WAPI request on the session's connection. */
export type Requester = <M extends MethodName>(
  method: M,
  params: Methods[M][0],
  options?: CallOptions,
) => Promise<Methods[M][1]>;
