"""The one server interceptor: authenticate, authorise, map errors, log.

Every method of wac's own packages (the contract, wac.v1, and the internal
hops, wac.internal.v1) passes through ``_wrap``; health and reflection do not.
Failures leave as canonical statuses with a precise message. An unexpected
exception is logged with a reference the client also gets, never a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc._cython import cygrpc
from grpc_status import rpc_status

from core import errors, failures, metrics, undecodable
from core.auth import policy
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal, set_current
from core.auth.principal import current as current_principal
from core.auth.rates import RateTable
from core.db import outage
from core.nul import nul_field
from settings import traces

log = logging.getLogger("wac.rpc")

# The packages whose methods are guarded: a method outside them (health,
# reflection) is served as it is, so each of wac's packages must be here.
GUARDED_PREFIXES = ("/wac.v1.", "/wac.internal.v1.")

# Metadata in which a hop (the WAPI edge, Envoy) shows the hop key on the
# calls it forwards for a client, beside the client's own credential.
HOP_METADATA = "x-wac-hop"


class Authenticator(Protocol):
    """Turns the bearer credential of a call into a principal."""

    async def authenticate(self, bearer: str) -> Principal: ...


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Whose forwarded client address the core believes.

    A call may name its client's address in ``header`` (x-forwarded-for)
    only when it carries the hop key in x-wac-hop (the WAPI edge, Envoy) or
    comes from one of ``trusted_proxies``; anyone else who reaches the port
    could otherwise name any address and dodge the per-address throttle.
    """

    hop_key: str = ""
    trusted_proxies: frozenset[str] = frozenset()
    header: str = "x-forwarded-for"

    def is_hop(self, presented: str) -> bool:
        # Constant-time against the loaded key: no lookup per call.
        return bool(self.hop_key) and hmac.compare_digest(presented.encode(), self.hop_key.encode())


@dataclass(frozen=True, slots=True)
class CallMetadata:
    """What the interceptor reads from a call's metadata."""

    token: str | None = None  # the bearer credential
    forwarded: str = ""  # the client address a hop forwarded
    hop: str = ""  # x-wac-hop
    traceparent: str = ""  # W3C trace context of the caller (Envoy, the edge, a client)
    malformed: bool = False  # an authorization that is not "Bearer <credential>"


def _metadata(metadata: tuple[tuple[str, str | bytes], ...], forwarded_header: str) -> CallMetadata:
    token: str | None = None
    forwarded = ""
    hop = ""
    traceparent = ""
    malformed = False
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == "authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() != "bearer" or not rest.strip():
                malformed = True
            else:
                token = rest.strip()
        elif key == forwarded_header:
            # The last entry is the one the trusted hop added; entries
            # before it came from whoever sent the request to that hop.
            forwarded = value.rsplit(",", 1)[-1].strip()
        elif key == HOP_METADATA:
            hop = value
        elif key == traces.TRACEPARENT:
            traceparent = value
    return CallMetadata(token, forwarded, hop, traceparent, malformed)


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or ""
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
    host = peer.split(":", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]")


class CoreInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        forwarding: Forwarding | None = None,
        subscriber_rates: RateTable | None = None,
        api_key_rates: RateTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracing: traces.Tracing | None = None,
    ) -> None:
        self._authenticator = authenticator
        # None (tracing off): no span is made, a caller's traceparent only
        # names the trace in the log lines.
        self._tracing = tracing
        self._forwarding = forwarding or Forwarding()
        # Subscribers and anonymous callers (by address) share one table;
        # API keys have their own allowance. None: not limited.
        self._subscriber_rates = subscriber_rates
        self._api_key_rates = api_key_rates
        self._clock = clock
        # grpc.aio asks for a handler on every call; the wrapped handler of a
        # method never changes, so it is built once.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or not method.startswith(GUARDED_PREFIXES):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = policy.rule_for(method)
        # Its counters and histogram, resolved once per method.
        measured = metrics.RpcMetrics(method)
        authenticator = self._authenticator
        forwarding = self._forwarding
        limit = self._limit

        tracing = self._tracing
        service, _, short = method[1:].rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": short}

        def traced(call: CallMetadata) -> contextlib.AbstractContextManager[Any]:
            """The call's span (tracing on), or its caller's trace id for
            its log lines (off); nothing at all for a call without one."""
            if tracing is not None:
                return tracing.span(method[1:], call.traceparent, attributes)
            if call.traceparent:
                return traces.Serving(call.traceparent)
            return _UNTRACED

        async def enter(context: grpc.aio.ServicerContext, call: CallMetadata) -> None:
            if call.malformed:
                raise failures.Unauthenticated("malformed authorization: expected 'Bearer <credential>'")
            peer = _peer_host(context)
            address = peer
            if call.forwarded and (peer in forwarding.trusted_proxies or (call.hop and forwarding.is_hop(call.hop))):
                address = call.forwarded
            principal = await authenticator.authenticate(call.token) if call.token else None
            policy.check(rule, principal, method)
            limit(principal, address)
            set_current(principal, address, call.token or "")

        def check(request: Any) -> None:
            undecodable.refuse(request)
            # Refused here once, for every method: PostgreSQL cannot bind U+0000 (see core/nul.py).
            field = nul_field(request)
            if field is not None:
                raise failures.Invalid(field, "must not contain NUL characters (U+0000)")

        def finished(context: grpc.aio.ServicerContext, started: float, span: Any, unary: bool) -> None:
            elapsed = time.perf_counter() - started
            code = context.code()
            measured.finished(code, elapsed if unary else None)
            _log_call(method, code, context, elapsed)
            if span is not None and tracing is not None:
                _end_span(tracing, span, code, context)

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                call = _metadata(tuple(context.invocation_metadata() or ()), forwarding.header)
                with traced(call) as span:
                    try:
                        await enter(context, call)
                        check(request)
                        return await behavior(request, context)
                    except Exception as exc:
                        await _fail(context, method, exc)
                    finally:
                        finished(context, started, span, True)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )

        async def pump(
            context: grpc.aio.ServicerContext, request: Any | None, open_items: Callable[[], AsyncGenerator[Any, None]]
        ) -> None:
            """Serve a stream: its items are written here rather than yielded
            to gRPC, so that a write to a client that went away fails in this
            frame (one debug line) instead of as a logged traceback. Closed
            on any exit, cancellation included, so that the servicer's
            cleanup runs now rather than when collected."""
            started = time.perf_counter()
            call = _metadata(tuple(context.invocation_metadata() or ()), forwarding.header)
            with traced(call) as span:
                try:
                    await enter(context, call)
                    if request is not None:
                        check(request)
                    async with contextlib.aclosing(open_items()) as items:
                        async for item in items:
                            await context.write(item)
                except Exception as exc:
                    if _gone(context, exc):
                        log.debug("%s: the client went away", method)
                        return
                    await _fail(context, method, exc)
                finally:
                    finished(context, started, span, False)

        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
                await pump(context, request, lambda: stream_behavior(request, context))

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            bidi_behavior = handler.stream_stream

            async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
                await pump(context, None, lambda: bidi_behavior(undecodable.refusing(requests), context))

            return grpc.stream_stream_rpc_method_handler(
                bidi,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        # Client streaming alone: no wac method has it, and one added later is
        # closed until it is wrapped here (never served without a policy).
        return grpc.stream_unary_rpc_method_handler(_unimplemented)

    def _limit(self, principal: Principal | None, address: str) -> None:
        """Raise RESOURCE_EXHAUSTED, with the delay to wait, when the caller
        is over its rate. The hop key is exempt: the edge multiplexes many
        subscribers on it and limits each of their sockets itself."""
        if isinstance(principal, SubscriberPrincipal):
            table, key = self._subscriber_rates, f"session:{principal.session_id}"
        elif isinstance(principal, ServicePrincipal):
            if "hop" in principal.scopes:
                return
            table, key = self._api_key_rates, f"key:{principal.key_name}"
        else:
            table, key = self._subscriber_rates, f"addr:{address}"
        if table is None:
            return
        wait = table.take(key, self._clock())
        if wait is not None:
            raise failures.Exhausted(f"too many calls: retry after {wait:.2f} s", retry_after=wait)


def _gone(context: grpc.aio.ServicerContext, exc: Exception) -> bool:
    """True when a stream failed because it is already over: the client
    cancelled or disconnected, or its status was sent (a stream ended for
    not reading). A write then fails with gRPC's internal ExecuteBatchError;
    that is the normal end of a stream, not an error of the server."""
    if isinstance(exc, failures.Failure | grpc.aio.AbortError):
        return False
    return context.cancelled() or isinstance(exc, cygrpc.ExecuteBatchError)


async def _unimplemented(requests: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "client-streaming methods are not served")


async def _fail(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, failures.Failure):
        # grpcio-status packs the google.rpc.Status into grpc-status-details-bin.
        await context.abort_with_status(rpc_status.to_status(errors.from_failure(exc).status()))
    if isinstance(exc, asyncio.CancelledError | grpc.aio.AbortError):
        raise exc
    if isinstance(exc, asyncio.InvalidStateError | grpc.aio.UsageError):
        raise exc
    message = outage.describe(exc)
    if message is not None:
        # One line, no traceback: an outage fails every request alike.
        log.warning("%s: %s: %s", method, message, exc)
        unavailable = failures.Unavailable(message)
        await context.abort_with_status(rpc_status.to_status(errors.from_failure(unavailable).status()))
    ref = secrets.token_hex(4)
    log.error("internal error in %s (ref %s)", method, ref, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); the operator's log has the details")


def _log_call(method: str, code: grpc.StatusCode | None, context: grpc.aio.ServicerContext, elapsed: float) -> None:
    """One line per call: at debug when it succeeded (or its client went
    away), at warning when it failed. The caller is named by username or
    API key name, never by its credential; the message is the status's,
    which wac writes for clients and never fills with secrets."""
    failed = code is not None and code not in _QUIET_CODES
    level = logging.WARNING if failed else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "method": method,
        "code": code.name if code is not None else "OK",
        "ms": round(elapsed * 1000, 2),
    }
    caller = current_principal()
    if isinstance(caller, SubscriberPrincipal):
        fields["subscriber"] = caller.username
    elif isinstance(caller, ServicePrincipal):
        fields["api_key"] = caller.key_name
    trace_id = traces.current_trace_id()
    if trace_id:
        fields["trace_id"] = trace_id
    if failed:
        fields["error"] = (context.details() or "")[:200]
    log.log(level, "rpc failed" if failed else "rpc", extra=fields)


def _end_span(
    tracing: traces.Tracing, span: Any, code: grpc.StatusCode | None, context: grpc.aio.ServicerContext
) -> None:
    status = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    caller = current_principal()
    if isinstance(caller, SubscriberPrincipal):
        span.set_attribute("enduser.id", caller.username)
    if code is not None and code not in _QUIET_CODES:
        tracing.fail(span, f"{status.name}: {(context.details() or '')[:200]}")


# A call that ended so is not a failure of anyone's: it succeeded, or its
# client went away (a stream's normal end).
_QUIET_CODES = frozenset({grpc.StatusCode.OK, grpc.StatusCode.CANCELLED})

# The context of a call that carries no trace (tracing off, no traceparent).
_UNTRACED = contextlib.nullcontext()
