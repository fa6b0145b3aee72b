"""StreamEvents is the edge's, and bounded (issue 14, item 2).

Anyone who reached the core's port could open it with no credential, attach
without limit and leave the replies unread until the core's memory ran out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from core.server import Core
from tests.calls.support import SDP, description, eventually
from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.timing import seconds
from wac.internal.v1 import stream_pb2, stream_pb2_grpc
from wac.v1 import calls_pb2, calls_pb2_grpc, events_pb2, events_pb2_grpc

Request = stream_pb2.StreamEventsRequest
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def md(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),) if credential else ()


def attach(key: int, token: str) -> Request:
    return Request(attach=Request.Attach(subscription=key, access_token=token))


@asynccontextmanager
async def core_with(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    async with (
        running_core(tmp_path / "data", env) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        yield core, channel


async def next_delivery(call: grpc.aio.StreamStreamCall) -> stream_pb2.StreamEventsResponse.Delivery:
    """The next delivery, skipping the session's own presence events."""
    while True:
        response = await asyncio.wait_for(call.read(), seconds())
        assert response is not grpc.aio.EOF
        for delivery in response.deliveries:
            if delivery.WhichOneof("outcome") != "event":
                return delivery


async def test_the_public_package_does_not_serve_the_edge_stream(core: Core, channel: grpc.aio.Channel) -> None:
    """StreamEvents moved to wac.internal.v1: its old wac.v1 path is not a method, even with the hop key."""
    call = channel.stream_stream("/wac.v1.EventsService/StreamEvents")(metadata=md(core.hop_key))
    await call.done_writing()
    assert await asyncio.wait_for(call.code(), seconds()) == grpc.StatusCode.UNIMPLEMENTED
    assert core.event_streams is not None and not core.event_streams.streams


@pytest.mark.parametrize("credential", ["none", "subscriber", "api key without hop", "garbage"])
async def test_a_stream_without_the_hop_key_is_refused_before_any_attach(
    core: Core, channel: grpc.aio.Channel, credential: str
) -> None:
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    presented = {
        "none": "",
        "subscriber": alice.access_token,
        "api key without hop": await api_key(core, "gateway", "identity.verify", "presence.read"),
        "garbage": "wac_0123456789abcdef_not-the-key",
    }[credential]
    call = stream_pb2_grpc.EdgeStreamServiceStub(channel).StreamEvents(metadata=md(presented))
    # A valid session's attach, which an open stream would accept.
    await call.write(attach(1, alice.access_token))
    responses = await asyncio.wait_for(_collect(call), seconds())
    expected = grpc.StatusCode.PERMISSION_DENIED if credential in ("subscriber", "api key without hop") else None
    code = await call.code()
    assert code == (expected or grpc.StatusCode.UNAUTHENTICATED), await call.details()
    assert responses == []
    # Nothing of the stream was set up: the attach was never read.
    assert core.event_streams is not None and not core.event_streams.streams
    assert not await core.devices.online_devices("alice")


async def _collect(call: grpc.aio.StreamStreamCall) -> list[stream_pb2.StreamEventsResponse]:
    """Every response until the stream ends, however it ends."""
    responses = []
    try:
        async for response in call:
            responses.append(response)
    except grpc.aio.AioRpcError:
        pass
    return responses


async def test_attachments_per_stream_are_bounded_and_the_stream_carries_on(tmp_path: Path) -> None:
    async with core_with(tmp_path, {"WAC_EVENTS_MAX_ATTACHMENTS_PER_STREAM": "3"}) as (core, channel):
        await add_subscriber(core, "alice")
        alice = await login(channel, "alice")
        call = stream_pb2_grpc.EdgeStreamServiceStub(channel).StreamEvents(metadata=md(core.hop_key))
        for key in (1, 2, 3):
            await call.write(attach(key, alice.access_token))
            assert (await next_delivery(call)).WhichOneof("outcome") == "accepted"
        await call.write(attach(4, alice.access_token))
        refused = await next_delivery(call)
        assert (refused.subscription, refused.ended.code) == (4, RESOURCE_EXHAUSTED.value[0])
        assert "3 subscriptions" in refused.ended.message
        # A detach makes room again: the stream itself was not harmed.
        await call.write(Request(detach=Request.Detach(subscription=2)))
        await call.write(attach(5, alice.access_token))
        accepted = await next_delivery(call)
        assert (accepted.subscription, accepted.WhichOneof("outcome")) == (5, "accepted")
        call.cancel()


async def test_streams_per_caller_are_bounded(tmp_path: Path) -> None:
    async with core_with(tmp_path, {"WAC_EVENTS_MAX_STREAMS_PER_PEER": "2"}) as (core, channel):
        await add_subscriber(core, "alice")
        alice = await login(channel, "alice")
        stub = stream_pb2_grpc.EdgeStreamServiceStub(channel)
        open_calls = []
        for key in (1, 2):
            call = stub.StreamEvents(metadata=md(core.hop_key))
            await call.write(attach(key, alice.access_token))
            assert (await next_delivery(call)).WhichOneof("outcome") == "accepted"
            open_calls.append(call)
        third = stub.StreamEvents(metadata=md(core.hop_key))
        await third.write(attach(3, alice.access_token))
        assert await asyncio.wait_for(_collect(third), seconds()) == []
        assert await third.code() == RESOURCE_EXHAUSTED
        assert "2 event streams open" in (await third.details() or "")
        # Closing one gives its place back.
        open_calls.pop().cancel()
        await eventually(lambda: len(core.event_streams.streams) == 1 if core.event_streams else False)
        fourth = stub.StreamEvents(metadata=md(core.hop_key))
        await fourth.write(attach(4, alice.access_token))
        assert (await next_delivery(fourth)).WhichOneof("outcome") == "accepted"
        for call in (*open_calls, fourth):
            call.cancel()


@asynccontextmanager
async def unread_streams(
    core: Core, channel: grpc.aio.Channel, attachments: int, streams: int = 1
) -> AsyncIterator[tuple[list[grpc.aio.StreamStreamCall], Callable[[], Awaitable[None]]]]:
    """StreamEvents calls that read nothing, each with alice's session
    attached ``attachments`` times (and junk attaches): every call offer to
    her is delivered that many times on each, 30 KiB each. Yields the calls
    and a function that places one more offer."""
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    alice, bob = await login(channel, "alice"), await login(channel, "bob")
    servicer = core.event_streams
    assert servicer is not None
    calls = []
    for _ in range(streams):
        call = stream_pb2_grpc.EdgeStreamServiceStub(channel).StreamEvents(metadata=md(core.hop_key))
        for key in range(1, attachments + 1):
            await call.write(attach(key, alice.access_token))
        for key in range(attachments + 1, attachments + 200):
            await call.write(attach(key, "junk"))
        calls.append(call)
    await eventually(
        lambda: len(servicer.streams) == streams and all(s.attachments == attachments for s in servicer.streams)
    )
    # Bob, the caller, needs his own event stream (read, elsewhere).
    bob_events = events_pb2_grpc.EventsServiceStub(channel).Subscribe(
        events_pb2.SubscribeRequest(), metadata=md(bob.access_token)
    )
    bob_reader = asyncio.create_task(_collect(bob_events))
    await eventually(lambda: core.devices.online_devices("bob"))
    big = SDP + "a=x-padding:" + "y" * 30_000 + "\r\n"
    stub = calls_pb2_grpc.CallsServiceStub(channel)

    async def offer() -> None:
        request = calls_pb2.CreateCallRequest(callee="alice", offer=description(sdp=big))
        await stub.CreateCall(request, metadata=md(bob.access_token))

    try:
        yield calls, offer
    finally:
        bob_events.cancel()
        await asyncio.gather(bob_reader, return_exceptions=True)


async def test_a_stream_whose_replies_are_never_read_is_ended_within_its_bounds(tmp_path: Path) -> None:
    queue, attachments = 8, 100
    env = {
        "WAC_EVENTS_STREAM_SEND_QUEUE": str(queue),
        "WAC_EVENTS_STREAM_STALL_SECONDS": "0.5",
        "WAC_EVENTS_MAX_ATTACHMENTS_PER_STREAM": str(attachments),
    }
    async with (
        core_with(tmp_path, env) as (core, channel),
        unread_streams(core, channel, attachments) as ([call], offer),
    ):
        servicer = core.event_streams
        assert servicer is not None
        # The edge (this client) reads nothing. About 4 MiB fill gRPC's
        # window, then the stream's own queue fills, then it must end. Three
        # offers are 9 MiB of deliveries (bob may place 4 calls at once).
        offers = 0
        while servicer.streams and offers < 3:
            await offer()
            offers += 1
            for stream in servicer.streams:
                assert stream.queued <= queue and stream.attachments <= attachments
        await eventually(lambda: not servicer.streams, seconds(2))
        # The core let go of the stream and all it held; the edge, reading
        # at last, gets what had reached it, then the reason.
        read = await asyncio.wait_for(_collect(call), seconds())
        assert read
        assert await call.code() == RESOURCE_EXHAUSTED, await call.details()
        assert "took no deliveries" in (await call.details() or "")


async def test_a_stream_cancelled_in_mid_write_logs_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"WAC_EVENTS_STREAM_SEND_QUEUE": "8", "WAC_EVENTS_MAX_ATTACHMENTS_PER_STREAM": "100"}
    # Several streams: whether gRPC fails the pending write before it
    # cancels the handler is a race, which each stream runs anew.
    async with (
        core_with(tmp_path, env) as (core, channel),
        unread_streams(core, channel, 100, streams=6) as (calls, offer),
    ):
        servicer = core.event_streams
        assert servicer is not None
        await offer()
        await offer()
        # Full queues: the streams are stuck in writes the client does not read.
        # Six streams of 100 attachments take their 30 KiB deliveries slowly
        # late in a whole suite's run (5 s was once not enough there).
        await eventually(lambda: all(stream.queued == 8 for stream in servicer.streams), seconds(3))
        caplog.set_level(logging.DEBUG)
        for call in calls:
            call.cancel()
        await eventually(lambda: not servicer.streams)
    # A cancelled stream is normal: no traceback, nothing above DEBUG.
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
