"""A StreamEvents response of few deliveries waits one turn of the event
loop for more: deliveries that the callbacks ready then produce (a call's
events to both parties, a log-in's presence) leave in one gRPC message, not
one each. No server."""

from __future__ import annotations

import asyncio

from google.protobuf import empty_pb2

from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import LocalDeviceRegistry
from core.events.edge_stream import Delivery, EdgeStreamServicer, _Stream
from core.events.handler import EventsHandler
from core.events.memory import MemoryEventLog


async def _nobody(_token: str) -> SubscriberPrincipal:
    raise AssertionError("no attachment in this test")


async def test_a_delivery_queued_a_turn_after_the_first_shares_its_response() -> None:
    servicer = EdgeStreamServicer(EventsHandler(MemoryEventLog(), LocalDeviceRegistry(grace_period=30)), _nobody)
    stream = _Stream(servicer, servicer.limits)
    responding = asyncio.ensure_future(stream.next_response())
    await asyncio.sleep(0)  # waiting for a first delivery
    loop = asyncio.get_running_loop()

    def first() -> None:
        stream.offer(Delivery(subscription=1, accepted=empty_pb2.Empty()))
        # The next one comes a turn later, as a publisher's next step after
        # an await does: behind the wake-up of the response builder.
        loop.call_soon(stream.offer, Delivery(subscription=2, accepted=empty_pb2.Empty()))

    loop.call_soon(first)
    response = await asyncio.wait_for(responding, 1)
    assert response is not None
    assert [d.subscription for d in response.deliveries] == [1, 2]


async def test_a_lone_delivery_is_not_held_back() -> None:
    servicer = EdgeStreamServicer(EventsHandler(MemoryEventLog(), LocalDeviceRegistry(grace_period=30)), _nobody)
    stream = _Stream(servicer, servicer.limits)
    responding = asyncio.ensure_future(stream.next_response())
    await asyncio.sleep(0)
    stream.offer(Delivery(subscription=7, accepted=empty_pb2.Empty()))
    response = await asyncio.wait_for(responding, 1)
    assert response is not None
    assert [d.subscription for d in response.deliveries] == [7]
