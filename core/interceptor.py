"""The one server interceptor: authenticate, authorise, map errors, log.

Every wac.v1 method passes through ``_guard``; health and reflection do not.
Failures leave as canonical statuses with a precise message. An unexpected
exception is logged with a reference the client also gets, never a trace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from core import errors, undecodable
from core.auth import policy
from core.auth.principal import Principal, set_current
from core.nul import nul_field

log = logging.getLogger("wac.rpc")


class Authenticator(Protocol):
    """Turns the bearer credential of a call into a principal."""

    async def authenticate(self, bearer: str) -> Principal: ...


def _bearer(metadata: tuple[tuple[str, str | bytes], ...]) -> tuple[str | None, str]:
    token: str | None = None
    address = ""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, rest = value.partition(" ")
            if scheme.lower() != "bearer" or not rest.strip():
                raise errors.unauthenticated("malformed authorization: expected 'Bearer <credential>'")
            token = rest.strip()
        elif key == "x-forwarded-for" and isinstance(value, str):
            address = value.split(",")[0].strip()
    return token, address


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or ""
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
    host = peer.split(":", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]")


class CoreInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
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
        if handler is None or not method.startswith("/wac.v1."):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = policy.rule_for(method)
        authenticator = self._authenticator

        async def enter(context: grpc.aio.ServicerContext) -> None:
            token, address = _bearer(tuple(context.invocation_metadata() or ()))
            principal = await authenticator.authenticate(token) if token else None
            policy.check(rule, principal, method)
            set_current(principal, address or _peer_host(context))

        def check(request: Any) -> None:
            undecodable.refuse(request)
            # Refused here once, for every method: PostgreSQL cannot bind U+0000 (see core/nul.py).
            field = nul_field(request)
            if field is not None:
                raise errors.invalid(field, "must not contain NUL characters (U+0000)")

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    await enter(context)
                    check(request)
                    return await behavior(request, context)
                except Exception as exc:
                    await _fail(context, method, exc)
                finally:
                    _log_call(method, context, started)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream_behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    await enter(context)
                    check(request)
                    async for item in stream_behavior(request, context):
                        yield item
                except Exception as exc:
                    await _fail(context, method, exc)
                finally:
                    _log_call(method, context, started)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            bidi_behavior = handler.stream_stream

            async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    await enter(context)
                    async for item in bidi_behavior(undecodable.refusing(requests), context):
                        yield item
                except Exception as exc:
                    await _fail(context, method, exc)
                finally:
                    _log_call(method, context, started)

            return grpc.stream_stream_rpc_method_handler(
                bidi,
                request_deserializer=undecodable.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        # Client streaming alone: no wac method has it, and one added later is
        # closed until it is wrapped here (never served without a policy).
        return grpc.stream_unary_rpc_method_handler(_unimplemented)


async def _unimplemented(requests: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "client-streaming methods are not served")


async def _fail(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, errors.ApiError):
        await context.abort(
            exc.code,
            exc.message,
            trailing_metadata=(("grpc-status-details-bin", exc.status_details()),),
        )
    if isinstance(exc, asyncio.CancelledError | grpc.aio.AbortError):
        raise exc
    if isinstance(exc, asyncio.InvalidStateError | grpc.aio.UsageError):
        raise exc
    ref = secrets.token_hex(4)
    log.error("internal error in %s (ref %s)", method, ref, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); the operator's log has the details")


def _log_call(method: str, context: grpc.aio.ServicerContext, started: float) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "rpc",
            extra={
                "method": method,
                "code": str(context.code()),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
