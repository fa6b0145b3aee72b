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
from edges.wapi.metrics import OK, MethodMetrics, status_name
from edges.wapi.rpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, Request, RpcError

log = logging.getLogger("wac.edge")


class Dispatcher:
    """The method table and the core client, used by every connection."""

    def __init__(self, table: MethodTable, client: CoreClient) -> None:
        self.table = table
        self.client = client
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

    async def call(self, method: Method, message: Message, credential: str | None, address: str) -> dict[str, Any]:
        """One unary call; the result as proto3 JSON, or RpcError."""
        measured = self.measured(method)
        started = time.perf_counter()
        try:
            response = await self.client.call(method, message, call_metadata(credential, address))
        except RpcError as failure:
            measured.finished(status_name(failure.code), time.perf_counter() - started)
            raise
        measured.finished(OK, time.perf_counter() - started)
        return methods.to_json(response)


def internal_error(where: str, exc: BaseException) -> RpcError:
    """An edge bug, logged with a reference the client also gets, never a trace."""
    ref = secrets.token_hex(4)
    log.error("internal error in %s (ref %s)", where, ref, exc_info=exc)
    return RpcError(INTERNAL_ERROR, f"internal error (ref {ref}); the operator's log has the details")
