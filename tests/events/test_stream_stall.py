"""A StreamEvents stream whose edge stopped reading, on a fake clock: it
ends RESOURCE_EXHAUSTED once its queue has stayed full, nothing taken, for
exactly stall_seconds (test_stream_events_abuse.py does it over gRPC)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import empty_pb2

from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import LocalDeviceRegistry
from core.events.edge_stream import Delivery, EdgeStreamServicer, StreamLimits, _Stream
from core.events.handler import EventsHandler
from core.events.memory import MemoryEventLog
from tests.support.clock import FakeClock

STALL = 30.0
TICK = 0.001


class Context:
    """The stream's gRPC context: records the status it is ended with."""

    def __init__(self) -> None:
        self.aborted: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted.append((code, message))


async def _refuse(_token: str) -> SubscriberPrincipal:
    raise AssertionError("not used")


def accepted(key: int) -> Any:
    return Delivery(subscription=key, accepted=empty_pb2.Empty())


async def test_a_full_stream_that_takes_nothing_ends_after_exactly_the_stall_time() -> None:
    clock = FakeClock()
    limits = StreamLimits(send_queue=1, stall_seconds=STALL)
    handler = EventsHandler(MemoryEventLog(clock=clock), LocalDeviceRegistry(1, clock=clock))
    servicer = EdgeStreamServicer(handler, _refuse, limits, clock)
    stream = _Stream(servicer, limits)
    handler = asyncio.ensure_future(asyncio.Event().wait())  # the blocked RPC handler
    context = Context()
    watchdog = asyncio.ensure_future(stream.watch(handler, context))
    try:
        await stream.put(accepted(1))  # full
        await clock.advance(10)
        assert (await stream.next_response()) is not None  # the edge takes it at 10 s ...
        await stream.put(accepted(2))  # ... and then stops reading: full again
        await clock.advance(STALL - TICK)
        assert not handler.done() and context.aborted == [], "30 s since the last take are not over"
        await clock.advance(TICK)
        assert handler.cancelled()
        assert context.aborted == [
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "the event stream took no deliveries for 30 s with 1 waiting")
        ]
        assert watchdog.done()
    finally:
        watchdog.cancel()
        handler.cancel()
        await asyncio.gather(watchdog, handler, return_exceptions=True)
