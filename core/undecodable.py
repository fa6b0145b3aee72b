"""Requests whose bytes are not a message of the method's type.

grpc.aio decodes a request before any handler or interceptor runs, and a
decode failure (a string field that is not UTF-8: GET
/sapi/v1/subscribers/%ff%fe through Envoy's transcoder) became UNKNOWN, a
500 carrying "Unexpected <class 'DecodeError'>: Error parsing message with
type 'wac.v1.GetSubscriberRequest'". Decoding here turns the failure into a
marker that the interceptor refuses as INVALID_ARGUMENT, after the caller's
credential was checked, with a message that names nothing internal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from google.protobuf.message import DecodeError

from core import failures


class _Undecodable:
    """The request that could not be decoded (one shared instance)."""

    __slots__ = ()


UNDECODABLE: Final = _Undecodable()

MESSAGE = "malformed request: it is not a valid message for this method (is every string valid UTF-8?)"


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """deserializer, answering UNDECODABLE instead of raising DecodeError."""
    if deserializer is None:
        return None
    decode = deserializer

    def decode_or_mark(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            return UNDECODABLE

    return decode_or_mark


def refuse(request: Any) -> None:
    """Raise INVALID_ARGUMENT if request is the undecodable marker."""
    if request is UNDECODABLE:
        raise failures.Malformed(MESSAGE)


async def refusing(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The requests of a stream, raising INVALID_ARGUMENT at the first undecodable one."""
    async for request in requests:
        refuse(request)
        yield request
