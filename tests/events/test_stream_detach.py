"""A subscription detached and attached again under the same key, on one
stream, with no server: the detached one's events stop at the detach, even
before its task has ended (the key is the new one's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import LocalDeviceRegistry
from core.events.edge_stream import EdgeStreamServicer, _Stream
from core.events.handler import EventsHandler
from core.events.memory import MemoryEventLog
from tests.support.timing import seconds
from wac.internal.v1 import stream_pb2
from wac.v1 import events_pb2

Request = stream_pb2.StreamEventsRequest
ALICE = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)


def note(text: str) -> events_pb2.Event:
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=text))


async def _alice(_token: str) -> SubscriberPrincipal:
    return ALICE


async def test_a_detached_subscription_gets_nothing_under_its_key_once_detached() -> None:
    log = MemoryEventLog()
    servicer = EdgeStreamServicer(EventsHandler(log, LocalDeviceRegistry(grace_period=30)), _alice)
    stream = _Stream(servicer, servicer.limits)
    requests: asyncio.Queue[Request | None] = asyncio.Queue()

    async def edge() -> AsyncIterator[Request]:
        while (request := await requests.get()) is not None:
            yield request

    seen: list[tuple[int, str]] = []

    async def take(until: tuple[int, str] | None) -> None:
        """Responses until a delivery ``until`` (None: what is queued now)."""
        while until is not None or stream.queued:
            response = await stream.next_response()
            assert response is not None
            for delivery in response.deliveries:
                outcome = delivery.WhichOneof("outcome")
                text = delivery.event.session_revoked.session_id if outcome == "event" else outcome
                seen.append((delivery.subscription, text))
            if until in seen:
                return

    reading = asyncio.ensure_future(stream.read(edge()))
    try:
        requests.put_nowait(Request(attach=Request.Attach(subscription=1, access_token="t")))
        await asyncio.wait_for(take((1, "accepted")), seconds(2))
        await log.publish(["alice"], note("one"))
        await asyncio.wait_for(take((1, "one")), seconds(2))
        requests.put_nowait(Request(detach=Request.Detach(subscription=1)))
        requests.put_nowait(Request(attach=Request.Attach(subscription=1, access_token="t", after_seq=1)))
        await asyncio.sleep(0)  # both read; the detached task not yet ended
        await log.publish(["alice"], note("two"))
        await asyncio.wait_for(take((1, "two")), seconds(2))
        await asyncio.sleep(0.05)
        await take(None)
        assert seen == [(1, "accepted"), (1, "one"), (1, "accepted"), (1, "two")]
    finally:
        requests.put_nowait(None)
        await reading
        await stream.close()
