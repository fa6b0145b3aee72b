"""A session's event stream on one core while another core publishes to it
and ends it, through the cluster's event log: the stream delivers each
event once, in order, then the final one, and ends."""

from __future__ import annotations

import asyncio

import pytest

from core.auth.principal import SubscriberPrincipal
from core.cluster import redis_client
from core.cluster.devices import LocalDeviceRegistry
from core.events.handler import EventsHandler
from core.events.redis_log import RedisEventLog
from tests.support.outbox import Collected
from tests.support.timing import seconds
from wac.v1 import events_pb2


def note(text: str) -> events_pb2.Event:
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=text))


@pytest.mark.parametrize("room", [1000, 3])
async def test_a_stream_on_one_core_ends_when_another_core_closes_its_session(redis_url: str, room: int) -> None:
    client = redis_client.connect(redis_url)
    publishing = RedisEventLog(client, node="core-a")
    streaming = RedisEventLog(client, node="core-b")
    await publishing.start()
    await streaming.start()
    try:
        await publishing.open("s1", "alice")  # the login, on core A
        handler = EventsHandler(streaming, LocalDeviceRegistry(grace_period=30))
        alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
        pending = await handler.open(alice, 0)
        outbox = Collected(room)
        streaming_task = asyncio.ensure_future(handler.follow(alice, 0, pending, outbox))
        texts = [f"event {index}" for index in range(6)]
        for text in texts:
            await publishing.publish(["alice"], note(text))
            await asyncio.sleep(0.01)
        await publishing.close("s1", note("logout"))
        await asyncio.wait_for(streaming_task, seconds(3))

        assert [e.session_revoked.session_id for _, e in outbox.events] == [*texts, "logout"]
        seqs = outbox.seqs
        assert seqs == list(range(seqs[0], seqs[0] + 7))
        # The first is read (the route set), then the next are handed as
        # they come, up to a full outbox; past it the follower reads.
        assert 1 <= outbox.offered <= min(room, 7) - 1
    finally:
        await streaming.stop()
        await publishing.stop()
        await redis_client.close(client)
