"""The front door and the hop key (issue 14, items 2 and 12), on a real
core, edge and Envoy: StreamEvents is not reachable from outside, and a
client cannot name its own address to the core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.support.core import add_subscriber, login
from tests.support.stack import Stack, running_stack
from tests.support.timing import seconds
from wac.internal.v1 import stream_pb2_grpc
from wac.v1 import events_pb2, events_pb2_grpc, identity_pb2, identity_pb2_grpc

# The fourth failed login from one address within the delay is refused.
THROTTLE = {
    "WAC_IDENTITY_THROTTLE_AFTER": "3",
    "WAC_IDENTITY_THROTTLE_DELAY": "30",
    "WAC_IDENTITY_LOCK_AFTER": "1000",
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path / "data", THROTTLE) as running:
        yield running


@pytest.fixture
async def front(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port}") as channel:
        yield channel


async def test_stream_events_is_not_routed_even_with_the_hop_key(stack: Stack, front: grpc.aio.Channel) -> None:
    call = stream_pb2_grpc.EdgeStreamServiceStub(front).StreamEvents(
        metadata=(("authorization", f"Bearer {stack.core.hop_key}"),)
    )
    # Envoy answers the headers alone. (Nothing is written: a write racing
    # that answer fails on the client's side with a status of its own.)
    # Routed to the core, the stream would stay open and silent.
    assert await asyncio.wait_for(call.code(), seconds()) == grpc.StatusCode.PERMISSION_DENIED
    assert await call.details() == "this method is internal to wac"
    assert stack.core.event_streams is not None and not stack.core.event_streams.streams


@pytest.mark.parametrize(
    "path",
    [
        # Any method of the internal package, however named.
        "/wac.internal.v1.NoSuchService/Anything",
        # Where StreamEvents was before it moved: every EventsService path but Subscribe.
        "/wac.v1.EventsService/StreamEvents",
    ],
)
async def test_internal_paths_are_not_routed(stack: Stack, front: grpc.aio.Channel, path: str) -> None:
    call = front.stream_stream(path)(metadata=(("authorization", f"Bearer {stack.core.hop_key}"),))
    assert await asyncio.wait_for(call.code(), seconds()) == grpc.StatusCode.PERMISSION_DENIED
    assert await call.details() == "this method is internal to wac"


async def test_subscribe_is_still_routed(stack: Stack, front: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice")
    alice = await login(front, "alice")
    events = events_pb2_grpc.EventsServiceStub(front).Subscribe(
        events_pb2.SubscribeRequest(), metadata=(("authorization", f"Bearer {alice.access_token}"),)
    )
    first = await events.read()
    assert first is not grpc.aio.EOF and first.seq >= 1
    events.cancel()


async def test_a_client_cannot_name_its_address_through_the_front_door(front: grpc.aio.Channel) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(front)
    codes = []
    for attempt in range(6):
        # A new address each time, and a made-up hop key: neither may reach the core.
        metadata = (("x-forwarded-for", f"203.0.113.{attempt + 1}"), ("x-wac-hop", "wac_0123456789abcdef_guessed"))
        request = identity_pb2.LoginRequest(username=f"nobody{attempt}", password="wrong password", device_name="t")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Login(request, metadata=metadata)
        codes.append(failed.value.code())
    assert codes[:3] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
