"""A request the core cannot decode (a string that is not UTF-8, from a
percent-encoded SAPI path or a raw gRPC client) is INVALID_ARGUMENT with a
message that names nothing internal; it was UNKNOWN (a 500) carrying
"<class 'google.protobuf.message.DecodeError'>" and the request's type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.sapi.support import assert_error, sapi_client, sapi_stack
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.stack import Stack

INTERNAL_NAMES = ("class", "DecodeError", "protobuf", "wac.v1", "Request", "Traceback")


def assert_names_nothing_internal(message: str) -> None:
    for name in INTERNAL_NAMES:
        assert name not in message, message


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with sapi_stack(tmp_path) as running:
        yield running


async def test_a_path_that_is_not_utf8_is_400_in_the_sapi_shape(stack: Stack) -> None:
    await add_subscriber(stack.core, "alice")
    key = await api_key(stack.core, "ops", "subscribers.read", "subscribers.write")
    async with sapi_client(stack, key) as client:
        answers = [
            await client.get("/sapi/v1/subscribers/%ff%fe"),
            await client.get("/sapi/v1/subscribers/%C3%28"),  # a truncated two-byte sequence
            await client.patch("/sapi/v1/subscribers/%ff%fe", json={"displayName": "x"}),
            await client.delete("/sapi/v1/subscribers/%ff%fe"),
            await client.get("/sapi/v1/subscribers", params={"pageToken": b"\xff".decode("latin-1")}),
        ]
        for answer in answers:
            body = assert_error(answer, 400, 3)
            assert_names_nothing_internal(body["message"])
        # A well-formed name still works: nothing else changed.
        assert (await client.get("/sapi/v1/subscribers/alice")).status_code == 200


async def test_native_grpc_gets_invalid_argument_after_its_credential_is_checked(tmp_path: Path) -> None:
    async with running_core(tmp_path) as core:
        key = await api_key(core, "ops", "subscribers.read")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            # The bytes of a GetSubscriberRequest whose username is ff fe.
            get = channel.unary_unary(
                "/wac.v1.IdentityService/GetSubscriber",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get(b"\x0a\x02\xff\xfe", metadata=(("authorization", f"Bearer {key}"),))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert_names_nothing_internal(refused.value.details() or "")
            # Without a credential the answer is about the credential.
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await get(b"\x0a\x02\xff\xfe")
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Not a protobuf message at all (a truncated field).
            with pytest.raises(grpc.aio.AioRpcError) as garbage:
                await get(b"\x0a\x7f", metadata=(("authorization", f"Bearer {key}"),))
            assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
