"""The cluster's event log across a Redis restart that lost its data: a
reader waiting on another node is told its events are gone (never a silent
gap), the session's new events take seqs the lost log never issued, and
the nodes' inbox readers carry on with the restarted Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from core.cluster import redis_client
from core.events.log import EventsExpired
from core.events.redis_log import RedisEventLog
from tests.support.redis import Redis, require_redis
from tests.support.server import throwaway
from tests.support.timing import seconds
from wac.v1 import events_pb2


def note(text: str) -> events_pb2.Event:
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=text))


@pytest.fixture
def private_redis() -> Iterator[Redis]:
    """A Redis of this test's own: it is restarted."""
    program = require_redis()
    with throwaway(lambda directory: Redis(directory, program), "wac-redis-") as server:
        yield server


async def test_a_restart_that_lost_the_logs_expires_readers_and_reuses_no_seq(private_redis: Redis) -> None:
    client = redis_client.connect(private_redis.url())
    writer = RedisEventLog(client, node="a")
    reader = RedisEventLog(client, node="b")
    await writer.start()
    await reader.start()
    try:
        await writer.open("s1", "alice")
        await writer.publish(["alice"], note("one"))
        last = (await reader.read("s1", 0))[-1].seq
        waiting = asyncio.ensure_future(reader.wait("s1", last, timeout=seconds(30)))
        await asyncio.sleep(0.05)

        private_redis.stop()
        private_redis.start(port=private_redis.port)

        with pytest.raises(EventsExpired):
            await asyncio.wait_for(waiting, seconds(10))
        await writer.open("s1", "alice")  # a refresh, before the client resumes
        waiting = asyncio.ensure_future(reader.wait("s1", 0, timeout=seconds(30)))
        await asyncio.sleep(0.05)
        await writer.publish(["alice"], note("two"))
        events = await asyncio.wait_for(waiting, seconds(5))
        assert [e.session_revoked.session_id for e in events] == ["two"]
        assert events[0].seq > last, "no seq of the lost log is issued again"
        with pytest.raises(EventsExpired):
            await reader.read("s1", last)
    finally:
        await reader.stop()
        await writer.stop()
        await redis_client.close(client)
