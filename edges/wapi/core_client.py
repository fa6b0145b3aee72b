"""The edge's one gRPC channel to the core, generic calls over it, and the
translation of a gRPC status into a JSON-RPC error.

Calls are made by method path with the message classes from the method
table, so no generated stub is involved. Every unary call has a deadline: a
core that is down or stuck yields UNAVAILABLE or DEADLINE_EXCEEDED with a
clear message, never a hang.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from edges.wapi.forwarded import HOP_HEADER
from edges.wapi.methods import Method
from edges.wapi.rpc import RpcError

log = logging.getLogger("wac.edge")

Metadata = tuple[tuple[str, str], ...]


_CHANNEL_OPTIONS = [
    # Reconnect quickly once a restarted core is back: the default backoff
    # starts at 1 s and grows to 2 min, during which every call fails.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Events carry SDPs (32 KiB at most); a result can be a page of 1000
    # subscribers. The core sends up to 4 MiB.
    ("grpc.max_receive_message_length", 4 << 20),
]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def call_metadata(token: str | None, address: str) -> Metadata:
    """What the core needs to know about the caller: its credential and its address."""
    metadata: list[tuple[str, str]] = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    if address:
        metadata.append(("x-forwarded-for", address))
    return tuple(metadata)


class CoreClient:
    """One channel to the core, shared by every connection of the edge.

    Bounds: ``deadline`` (seconds, > 0) applies to every unary call.
    ``hop_key`` (settings/hopkey.py) goes in x-wac-hop on every call, so that the
    core believes the client address the edge forwards, and authorises the
    edge's StreamEvents.
    """

    def __init__(self, address: str, *, deadline: float, hop_key: str = "") -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.address = address
        self.deadline = deadline
        self.hop_key = hop_key
        self._hop: Metadata = ((HOP_HEADER, hop_key),) if hop_key else ()
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._streams: dict[str, grpc.aio.UnaryStreamMultiCallable] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel itself (the readiness probe asks the core's health on it)."""
        return self._channel

    async def call(self, method: Method, request: Message, metadata: Metadata) -> Message:
        """One unary call; raises RpcError with the core's status on failure."""
        callable_ = self._unary.get(method.path)
        if callable_ is None:
            callable_ = self._channel.unary_unary(
                method.path,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
            )
            self._unary[method.path] = callable_
        try:
            response: Message = await callable_(request, metadata=metadata + self._hop, timeout=self.deadline)
        except grpc.aio.AioRpcError as exc:
            raise status_error(method.name, exc.code(), exc.details(), rich_status(exc), self.deadline) from None
        return response

    def stream(self, method: Method, request: Message, metadata: Metadata) -> grpc.aio.UnaryStreamCall:
        """Open a server stream. It has no deadline: a subscription lasts as long as its client."""
        callable_ = self._streams.get(method.path)
        if callable_ is None:
            callable_ = self._channel.unary_stream(
                method.path,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
            )
            self._streams[method.path] = callable_
        return callable_(request, metadata=metadata + self._hop)

    def stream_stream(
        self, path: str, response_type: type[Message], requests: AsyncIterator[Message]
    ) -> grpc.aio.StreamStreamCall:
        """Open a bidirectional stream fed from ``requests``, as the edge
        itself (the hop key is its credential); no deadline."""
        callable_ = self._channel.stream_stream(
            path,
            request_serializer=_serialize,
            response_deserializer=response_type.FromString,
        )
        metadata = (("authorization", f"Bearer {self.hop_key}"),) if self.hop_key else ()
        return callable_(requests, metadata=metadata)

    async def stream_error(self, method: Method, call: grpc.aio.UnaryStreamCall) -> RpcError | None:
        """The error a finished stream ended with, or None if it ended OK."""
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return None
        try:
            rich = await rpc_status.aio.from_call(call)
        except (ValueError, DecodeError):  # unreadable, or contradicting the status: not the core's own
            rich = None
        return status_error(method.name, code, await call.details(), rich)

    async def close(self) -> None:
        await self._channel.close()


def status_error(
    method: str,
    code: grpc.StatusCode,
    details: str | None,
    status: status_pb2.Status | None,
    deadline: float | None = None,
) -> RpcError:
    """A gRPC status as a JSON-RPC error: code = the status number, message = the core's.

    The google.rpc.Status details (``status``, from ``grpc-status-details-bin``) become
    ``data``: BadRequest field violations as ``fieldViolations``, RetryInfo as
    ``retryDelay`` (a proto3 JSON duration, "1.500s"), ErrorInfo as
    ``reason``. A status without details did not come from the core's own
    error mapping but from the transport (the core is down, the deadline
    passed, the method is not served): its message is written here, and the
    transport's own text, which can name internal addresses, only goes to
    the log.
    """
    data: dict[str, Any] = {"status": code.name}
    message = (status.message if status is not None else "") or details or ""
    if status is not None:
        _add_details(status, data)
    elif code == grpc.StatusCode.UNAVAILABLE:
        log.warning("core unavailable", extra={"method": method, "detail": details})
        message = "the wac core is unavailable; try again shortly"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f" within {deadline:g} s" if deadline else " in time"
        message = f"the wac core did not answer{limit}"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = f"{method} is not implemented by this core"
    elif code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and not message.startswith("internal error"):
        log.warning("core call failed", extra={"method": method, "code": code.name, "detail": details})
        message = "internal error in the wac core"
    return RpcError(code.value[0], message or code.name.lower().replace("_", " "), data)


def rich_status(call: grpc.Call | grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a finished call carries (grpcio-status reads
    ``grpc-status-details-bin``), or None: absent, or contradicting the
    call's own status, so not the core's."""
    try:
        return rpc_status.from_call(call)
    except (ValueError, DecodeError):
        return None


def _add_details(status: status_pb2.Status, data: dict[str, Any]) -> None:
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            data.setdefault("fieldViolations", []).extend(
                {"field": v.field, "description": v.description} for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            data["retryDelay"] = retry.retry_delay.ToJsonString()
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            data["reason"] = info.reason
            if info.domain:
                data["domain"] = info.domain
            if info.metadata:
                data["metadata"] = dict(info.metadata)
