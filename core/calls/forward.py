"""Forwarding a call's input to the core that owns it, in a cluster.

The input goes to the owner as it came: the same method and request, the
client's credential and metadata, with this core vouching (the hop key in
x-wac-hop) for the client address it saw, so the owner authorises, throttles
and logs the same client. ``FORWARDED`` marks it, so the owner never sends it
on again. The owner's answer, or its status with its details and trailing
metadata (grpc-status-details-bin), goes back to the client unchanged.

One channel per peer node, kept while its address stays the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from core import failures
from core.auth.principal import client_address
from core.cluster.owners import CallOwners
from core.interceptor import HOP_METADATA
from settings.checks import split_address
from settings.fields import ConfigError

# Set on an input a core forwards to the call's owner.
FORWARDED = "x-wac-forwarded-to-owner"

R = TypeVar("R", bound=Message)


def forwarded(context: grpc.aio.ServicerContext) -> bool:
    """Whether the input was forwarded by another core."""
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


class Forwarder:
    """Sends inputs to the owners of calls, found through ``owners``."""

    def __init__(self, owners: CallOwners, *, hop_key: str, address_header: str) -> None:
        self._owners = owners
        self._hop_key = hop_key
        self._address_header = address_header.lower()
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        # Channels to an address a node no longer has: closed with the rest,
        # as calls on them may still be under way.
        self._retired: list[grpc.aio.Channel] = []

    async def unary(
        self, node: str, method: str, request: Message, response_type: type[R], context: grpc.aio.ServicerContext
    ) -> R:
        """Call ``method`` (its full path) on ``node`` with the client's request."""
        address = await self._owners.address(node)
        if address is None:
            raise failures.Unavailable("the core holding this call is gone; retry in a moment")
        stub = self._channel(node, address).unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        try:
            response: R = await stub(request, metadata=self._metadata(context), timeout=context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            trailers = tuple(exc.trailing_metadata() or ())
            if exc.code() is grpc.StatusCode.UNAVAILABLE and not any(key == _DETAILS for key, _ in trailers):
                # The transport's, not the owner's (whose failures all carry
                # google.rpc details): its text names internal addresses.
                raise failures.Unavailable("the core holding this call did not answer; retry in a moment") from None
            await context.abort(exc.code(), exc.details() or "", trailers)
            raise  # abort raises; this only tells the type checker
        return response

    async def close(self) -> None:
        channels = [channel for _, channel in self._channels.values()] + self._retired
        self._channels, self._retired = {}, []
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    def _channel(self, node: str, address: str) -> grpc.aio.Channel:
        known = self._channels.get(node)
        if known is not None and known[0] == address:
            return known[1]
        if known is not None:
            # Restarted elsewhere under the same id.
            self._retired.append(known[1])
        channel = grpc.aio.insecure_channel(address)
        self._channels[node] = (address, channel)
        return channel

    def _metadata(self, context: grpc.aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
        replaced = {HOP_METADATA, self._address_header, FORWARDED}
        kept = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key not in replaced and not key.startswith(("grpc-", ":")) and key not in _TRANSPORT
        ]
        kept.append((FORWARDED, "1"))
        if self._hop_key:
            kept += [(HOP_METADATA, self._hop_key), (self._address_header, client_address())]
        return tuple(kept)


# Where the interceptor packs an owner's google.rpc.Status.
_DETAILS = "grpc-status-details-bin"
# Set by the transport itself on each call.
_TRANSPORT = frozenset({"user-agent", "content-type", "te", "host"})


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


_WILDCARDS = frozenset({"0.0.0.0", "::", "*"})


def advertised(advertise: str, listen: str) -> Callable[[int], str]:
    """The address other cores reach this core at, from its bound port:
    ``[cluster] advertise`` if set, else the listen address's host, which
    is refused (at start, before anything binds) if it is a wildcard."""
    if advertise:
        return lambda port: advertise
    host, _port = split_address(listen, any_port=True)
    if host in _WILDCARDS:
        raise ConfigError(
            f"[cluster] advertise: core.listen {listen!r} is on every interface; "
            "set advertise to the host:port the other cores reach this core at"
        )
    shown = f"[{host}]" if ":" in host else host
    return lambda port: f"{shown}:{port}"
