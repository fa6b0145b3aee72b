"""edges.wapi.event_streams: how the shared stream's failures reach each
subscription (a fake core client; the stream itself is tested end to end in
tests/events and tests/wapi)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc.aio import AioRpcError, Metadata
from grpc_status import rpc_status

from core import errors, failures
from edges.wapi.event_streams import EventStreams
from edges.wapi.rpc import RpcError
from wac.internal.v1 import stream_pb2


class BrokenCall:
    """A StreamEvents call that accepts every attach, then fails as told."""

    def __init__(self, requests: AsyncIterator[Message], error: AioRpcError) -> None:
        self._requests = requests
        self._error = error
        self._done = False

    def __aiter__(self) -> AsyncIterator[stream_pb2.StreamEventsResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[stream_pb2.StreamEventsResponse]:
        async for request in self._requests:
            accepted = stream_pb2.StreamEventsResponse.Delivery(subscription=request.attach.subscription)
            accepted.accepted.SetInParent()
            yield stream_pb2.StreamEventsResponse(deliveries=[accepted])
            break
        await asyncio.sleep(0)
        self._done = True
        raise self._error

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        self._done = True


class Client:
    def __init__(self, error: AioRpcError) -> None:
        self.error = error

    def stream_stream(self, path: str, response_type: Any, requests: AsyncIterator[Message]) -> BrokenCall:
        return BrokenCall(requests, self.error)


async def ended_with(error: AioRpcError) -> RpcError | None:
    streams = EventStreams(Client(error), deadline=2)  # type: ignore[arg-type]
    ended: asyncio.Future[RpcError | None] = asyncio.get_running_loop().create_future()

    class Socket:
        def event(self, message: Message) -> None:
            pass

        def ended(self, failure: RpcError | None) -> None:
            ended.set_result(failure)

    await streams.subscribe("token", 0, "203.0.113.9", Socket())
    try:
        return await asyncio.wait_for(ended, 2)
    finally:
        await streams.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
async def test_a_broken_hop_tells_every_subscriber_to_reconnect_and_resume(code: grpc.StatusCode) -> None:
    # What a core that dies behind Envoy looks like: a reset stream, no details.
    failure = await ended_with(AioRpcError(code, Metadata(), Metadata(), details="Received RST_STREAM"))
    assert failure is not None
    assert (failure.code, failure.message) == (
        grpc.StatusCode.UNAVAILABLE.value[0],
        "the wac core ended the event stream; reconnect and resume",
    )


async def test_a_core_that_cannot_be_reached_is_said_so() -> None:
    failure = await ended_with(AioRpcError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(), details="refused"))
    assert failure is not None
    assert (failure.code, failure.message) == (14, "the wac core is unavailable; try again shortly")


async def test_a_status_the_core_sent_itself_is_passed_on() -> None:
    sent = rpc_status.to_status(errors.from_failure(failures.Exhausted("too many streams", retry_after=1)).status())
    error = AioRpcError(sent.code, Metadata(), Metadata(*sent.trailing_metadata), details=sent.details)
    failure = await ended_with(error)
    assert failure is not None
    assert (failure.code, failure.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "too many streams")
    assert failure.data["retryDelay"] == "1s"


class HeldCall:
    """A StreamEvents call that records each attach and accepts one when the test says."""

    def __init__(self, requests: AsyncIterator[stream_pb2.StreamEventsRequest]) -> None:
        self.attached: list[int] = []
        self.accept: asyncio.Queue[int | None] = asyncio.Queue()
        self._done = False
        self._reader = asyncio.create_task(self._read(requests))

    async def _read(self, requests: AsyncIterator[stream_pb2.StreamEventsRequest]) -> None:
        async for request in requests:
            if request.WhichOneof("action") == "attach":
                self.attached.append(request.attach.subscription)

    def __aiter__(self) -> AsyncIterator[stream_pb2.StreamEventsResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[stream_pb2.StreamEventsResponse]:
        while (key := await self.accept.get()) is not None:
            accepted = stream_pb2.StreamEventsResponse.Delivery(subscription=key)
            accepted.accepted.SetInParent()
            yield stream_pb2.StreamEventsResponse(deliveries=[accepted])

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        self._done = True
        self.accept.put_nowait(None)
        self._reader.cancel()


class HoldingClient:
    def __init__(self) -> None:
        self.calls: list[HeldCall] = []

    def stream_stream(self, path: str, response_type: Any, requests: AsyncIterator[Message]) -> HeldCall:
        self.calls.append(HeldCall(requests))
        return self.calls[-1]


class Quiet:
    def event(self, message: Message) -> None:
        pass

    def ended(self, failure: RpcError | None) -> None:
        pass


async def test_attachments_beyond_the_window_wait_until_earlier_ones_are_answered() -> None:
    client = HoldingClient()
    streams = EventStreams(client, deadline=2, attach_window=2)  # type: ignore[arg-type]
    subscribing = [asyncio.create_task(streams.subscribe(f"token{i}", 0, "203.0.113.9", Quiet())) for i in range(4)]
    await asyncio.sleep(0.05)
    (call,) = client.calls
    assert call.attached == [1, 2]  # the core is asked for two at a time
    subscribing[3].cancel()  # its socket went away while it waited
    call.accept.put_nowait(1)
    assert await subscribing[0] == 1
    await asyncio.sleep(0.05)
    assert call.attached == [1, 2, 3]  # the answer let the next one through; the cancelled one never goes
    call.accept.put_nowait(2)
    call.accept.put_nowait(3)
    assert [await subscribing[1], await subscribing[2]] == [2, 3]
    # Everything answered: the window is empty, a new subscription goes at once.
    later = asyncio.create_task(streams.subscribe("token4", 0, "203.0.113.9", Quiet()))
    await asyncio.sleep(0.05)
    assert call.attached == [1, 2, 3, 4]
    call.accept.put_nowait(4)
    assert await later == 4
    await streams.close()


async def test_a_waiting_attachment_has_the_whole_deadline_from_its_turn() -> None:
    client = HoldingClient()
    streams = EventStreams(client, deadline=0.3, attach_window=1)  # type: ignore[arg-type]
    first = asyncio.create_task(streams.subscribe("token0", 0, "203.0.113.9", Quiet()))
    second = asyncio.create_task(streams.subscribe("token1", 0, "203.0.113.9", Quiet()))
    await asyncio.sleep(0.2)
    (call,) = client.calls
    call.accept.put_nowait(1)
    assert await first == 1
    await asyncio.sleep(0.2)  # 0.4 s since it asked, 0.2 s since its turn: not yet late
    assert not second.done() and call.attached == [1, 2]
    call.accept.put_nowait(2)
    assert await second == 2
    await streams.close()
