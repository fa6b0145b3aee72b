"""From a JSON-RPC request to a core call and back, shared by both adapters.

The adapters decide which credential a call carries and what happens to the
connection afterwards; this module only resolves the method, translates
params and result, and makes the call.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from google.protobuf.message import Message

from edges.wapi import methods
from edges.wapi.core_client import CoreClient, call_metadata
from edges.wapi.event_streams import EventStreams
from edges.wapi.methods import Method, MethodTable, StreamJson
from edges.wapi.metrics import OK, WAPI_REFUSED, MethodMetrics, status_name
from edges.wapi.rpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, Request, RpcError
from settings import traces

log = logging.getLogger("wac.edge")
# One line per WAPI request: debug when it succeeded, warning when it failed.
requests_log = logging.getLogger("wac.wapi")


class Dispatcher:
    """The method table and the core client, used by every connection."""

    def __init__(self, table: MethodTable, client: CoreClient, tracing: traces.Tracing | None = None) -> None:
        self.table = table
        self.client = client
        # None (tracing off): a client's traceparent is passed on to the
        # core as it came, for the log lines; no span is made.
        self.tracing = tracing
        # The sockets' event subscriptions, over one stream to the core.
        self.events = EventStreams(client, deadline=client.deadline)
        # Shared by every connection: a fan-out is converted once.
        self.stream_json = StreamJson()
        # Each method's metrics, made at its first call.
        self._measured: dict[str, MethodMetrics] = {}

    def resolve(self, request: Request) -> tuple[Method, Message]:
        """The method and its request message; RpcError -32601 or -32602."""
        method = self.table.get(request.method)
        if method is None:
            raise RpcError(
                METHOD_NOT_FOUND,
                f'unknown method "{request.method[:100]}"; methods are named "<Service>.<Method>", '
                'e.g. "IdentityService.Login"',
            )
        if method.client_streaming:
            raise RpcError(
                METHOD_NOT_FOUND,
                f"{method.name} streams from the client, which the WAPI does not carry",
            )
        try:
            return method, method.parse_params(request.params)
        except RecursionError:
            # Nested values the message does not have room for, deep enough
            # to exhaust the parser's stack: a client's error, not the edge's.
            raise RpcError(INVALID_PARAMS, "invalid params: values are nested too deeply") from None

    def measured(self, method: Method) -> MethodMetrics:
        """The method's request counter and latency histogram."""
        measured = self._measured.get(method.name)
        if measured is None:
            measured = self._measured[method.name] = MethodMetrics(method.name)
        return measured

    async def call(
        self,
        method: Method,
        message: Message,
        credential: str | None,
        address: str,
        *,
        traceparent: str = "",
        subscriber: str = "",
    ) -> dict[str, Any]:
        """One unary call; the result as proto3 JSON, or RpcError.

        ``traceparent``: the request's (its member, else the HTTP request's
        header); the call joins that trace. ``subscriber``: the username the
        connection logged in as, when the edge knows it, for the log line.
        """
        measured = self.measured(method)
        metadata = call_metadata(credential, address)
        started = time.perf_counter()
        tracing = self.tracing
        if tracing is not None:
            with tracing.span(
                f"WAPI {method.name}", traceparent, {"rpc.system": "jsonrpc", "rpc.method": method.name}
            ) as span:
                # The core's span is a child of this one.
                metadata += ((traces.TRACEPARENT, tracing.traceparent()),)
                try:
                    return await self._call(method, message, metadata, measured, started, subscriber)
                except RpcError as failure:
                    span.set_attribute("rpc.jsonrpc.error_code", failure.code)
                    tracing.fail(span, failure.message[:200])
                    raise
        if traceparent:
            with traces.Serving(traceparent) as trace_id:
                if trace_id:
                    metadata += ((traces.TRACEPARENT, traceparent),)
                return await self._call(method, message, metadata, measured, started, subscriber)
        return await self._call(method, message, metadata, measured, started, subscriber)

    async def _call(
        self,
        method: Method,
        message: Message,
        metadata: tuple[tuple[str, str], ...],
        measured: MethodMetrics,
        started: float,
        subscriber: str,
    ) -> dict[str, Any]:
        try:
            response = await self.client.call(method, message, metadata)
        except RpcError as failure:
            elapsed = time.perf_counter() - started
            measured.finished(status_name(failure.code), elapsed)
            log_request(method.name, failure, elapsed, subscriber)
            raise
        elapsed = time.perf_counter() - started
        measured.finished(OK, elapsed)
        if requests_log.isEnabledFor(logging.DEBUG):
            log_request(method.name, None, elapsed, subscriber)
        return methods.to_json(response)

    def refused(self, request: Request, failure: RpcError, subscriber: str = "") -> None:
        """A request the edge answered itself with an error (unknown method,
        bad params, not logged in), never reaching the core."""
        WAPI_REFUSED.labels(status_name(failure.code)).inc()
        with traces.Serving(request.traceparent):
            log_request(request.method[:100], failure, None, subscriber)


def login_name(message: Message) -> str:
    """The username a Login names, for its log line ("" for any other method)."""
    username = getattr(message, "username", "")
    return username if isinstance(username, str) else ""


def log_request(method: str, failure: RpcError | None, elapsed: float | None, subscriber: str) -> None:
    """The request's line: method, outcome, milliseconds, subscriber (never
    a token: the edge only names whom a connection logged in as) and the
    trace id of the request, when it has one."""
    level = logging.DEBUG if failure is None else logging.WARNING
    if not requests_log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"method": method, "code": "OK" if failure is None else status_name(failure.code)}
    if elapsed is not None:
        fields["ms"] = round(elapsed * 1000, 2)
    if subscriber:
        fields["subscriber"] = subscriber
    trace_id = traces.current_trace_id()
    if trace_id:
        fields["trace_id"] = trace_id
    if failure is not None:
        fields["error"] = failure.message[:200]
    requests_log.log(level, "wapi failed" if failure else "wapi", extra=fields)


def internal_error(where: str, exc: BaseException) -> RpcError:
    """An edge bug, logged with a reference the client also gets, never a trace."""
    ref = secrets.token_hex(4)
    log.error("internal error in %s (ref %s)", where, ref, exc_info=exc)
    return RpcError(INTERNAL_ERROR, f"internal error (ref {ref}); the operator's log has the details")
