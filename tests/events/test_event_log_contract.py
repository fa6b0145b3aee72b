"""The EventLog contract, kept by both implementations: the embedded one
(memory.py) and the cluster's (redis_log.py, on a real Redis, two nodes
where it matters). Seqs are compared from the session's first one: the
embedded log starts at 1, the cluster's above every seq a lost Redis may
have issued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core import failures
from core.cluster import redis_client
from core.events.log import EventLog, EventsExpired, Listening
from core.events.memory import MemoryEventLog
from core.events.redis_log import RedisEventLog
from tests.support.clock import FakeClock
from tests.support.timing import seconds
from wac.v1 import events_pb2

# The reading node of a two-node log (the other one writes); a log made by
# the factory with no node is the first one.
MakeLog = Callable[..., Awaitable[EventLog]]


def note(text: str) -> events_pb2.Event:
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=text))


def texts(events: list[events_pb2.Event]) -> list[str]:
    return [e.session_revoked.session_id for e in events]


async def first_seq(log: EventLog, session: str) -> int:
    """The seq the session's next event will have: its first."""
    await log.publish_to_sessions([session], note("probe"))
    probe = await log.read(session, 0)
    return probe[-1].seq + 1


@pytest.fixture(params=["memory", "redis"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[MakeLog]:
    """Makes logs sharing one store: for memory, the same log each time
    (one process); for Redis, one log per node on the same Redis."""
    if request.param == "memory":
        shared: dict[str, MemoryEventLog] = {}

        async def make_memory(node: str = "a", **options: object) -> EventLog:
            if "log" not in shared:
                shared["log"] = MemoryEventLog(**options)  # type: ignore[arg-type]
            return shared["log"]

        yield make_memory
        return
    client = redis_client.connect(request.getfixturevalue("redis_url"))
    logs: dict[str, RedisEventLog] = {}

    async def make_redis(node: str = "a", **options: object) -> EventLog:
        if node not in logs:
            logs[node] = RedisEventLog(client, node=node, **options)  # type: ignore[arg-type]
            await logs[node].start()
        return logs[node]

    try:
        yield make_redis
    finally:
        for made in logs.values():
            await made.stop()
        await redis_client.close(client)


async def test_publish_read_and_resume(make_log: MakeLog) -> None:
    log = await make_log()
    await log.open("s1", "alice")
    await log.open("s2", "alice")
    await log.open("s3", "bob")
    await log.publish(["alice"], note("one"))
    await log.publish(["alice", "bob"], note("two"))
    events = await log.read("s1", 0)
    assert texts(events) == ["one", "two"]
    first = events[0].seq
    assert events[1].seq == first + 1
    assert all(e.HasField("time") for e in events)
    assert texts(await log.read("s1", first)) == ["two"]
    assert await log.read("s1", first + 1) == []
    assert texts(await log.read("s3", 0)) == ["two"]
    assert texts(await log.read("s1", 0, limit=1)) == ["one"]


async def test_the_session_that_caused_an_event_is_left_out(make_log: MakeLog) -> None:
    log = await make_log()
    await log.open("s1", "alice")
    await log.open("s2", "alice")
    await log.publish(["alice"], note("one"), exclude_session="s1")
    assert await log.read("s1", 0) == []
    assert texts(await log.read("s2", 0)) == ["one"]


async def test_publish_to_sessions_reaches_those_open_sessions_only(make_log: MakeLog) -> None:
    log = await make_log()
    await log.open("s1", "alice")
    await log.open("s2", "alice")
    await log.open("s3", "bob")
    await log.close("s3")
    await log.publish_to_sessions(["s1", "s3", "unknown"], note("one"))
    assert texts(await log.read("s1", 0)) == ["one"]
    assert await log.read("s2", 0) == []
    assert await log.read("s3", 0) == []
    assert await log.read("unknown", 0) == []


async def test_a_closed_session_keeps_its_final_event_and_gets_no_more(make_log: MakeLog) -> None:
    log = await make_log()
    await log.open("s1", "alice")
    await log.open("s2", "alice")
    assert await log.is_open("s1")
    assert not await log.is_open("unknown")
    await log.publish(["alice"], note("one"))
    await log.close("s1", note("bye"))
    await log.close("s1", note("again"))  # closing twice appends nothing
    assert not await log.is_open("s1")
    await log.publish(["alice"], note("two"))
    await log.publish_to_sessions(["s1"], note("three"))
    await log.open("s1", "alice")  # stays closed
    assert not await log.is_open("s1")
    assert texts(await log.read("s1", 0)) == ["one", "bye"]
    assert texts(await log.read("s2", 0)) == ["one", "two"]


async def test_seqs_never_issued_and_unknown_sessions_are_expired(make_log: MakeLog) -> None:
    log = await make_log()
    await log.open("s1", "alice")
    first = await first_seq(log, "s1")
    with pytest.raises(EventsExpired):
        await log.read("s1", first)  # not issued yet
    with pytest.raises(EventsExpired):
        await log.read("unknown", 5)
    assert await log.read("unknown", 0) == []


async def test_events_beyond_the_count_bound_are_expired(make_log: MakeLog) -> None:
    log = await make_log(max_events=3)
    await log.open("s1", "alice")
    first = await first_seq(log, "s1")
    for text in ("one", "two", "three", "four", "five"):
        await log.publish(["alice"], note(text))
    assert texts(await log.read("s1", 0)) == ["three", "four", "five"]
    with pytest.raises(EventsExpired):
        await log.read("s1", first)  # "two" is gone
    assert texts(await log.read("s1", first + 1)) == ["three", "four", "five"]


async def test_events_past_the_retention_window_are_expired(make_log: MakeLog) -> None:
    clock = FakeClock()
    log = await make_log(retention=120, clock=clock)
    await log.open("s1", "alice")
    first = await first_seq(log, "s1")
    await log.publish(["alice"], note("one"))
    await clock.advance(100)
    await log.publish(["alice"], note("two"))
    await clock.advance(20)
    assert texts(await log.read("s1", first - 1)) == ["one", "two"], "at the window's edge: kept"
    await clock.advance(0.001)
    with pytest.raises(EventsExpired):
        await log.read("s1", first - 1)
    assert texts(await log.read("s1", first)) == ["two"]
    assert texts(await log.read("s1", 0)) == ["two"]


async def test_a_wait_wakes_on_an_event_published_by_another_node(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    await writer.open("s1", "alice")
    first = await first_seq(writer, "s1")
    waiting = asyncio.ensure_future(reader.wait("s1", first - 1, timeout=seconds(10)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await writer.publish(["alice"], note("one"))
    events = await asyncio.wait_for(waiting, seconds(2))
    assert texts(events) == ["one"]
    assert events[0].seq == first


async def test_a_wait_wakes_when_another_node_closes_the_session(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    await writer.open("s1", "alice")
    first = await first_seq(writer, "s1")
    waiting = asyncio.ensure_future(reader.wait("s1", first - 1, timeout=seconds(10)))
    await asyncio.sleep(0.05)
    await writer.close("s1", note("bye"))
    assert texts(await asyncio.wait_for(waiting, seconds(2))) == ["bye"]
    waiting = asyncio.ensure_future(reader.wait("s1", first, timeout=seconds(10)))
    assert await asyncio.wait_for(waiting, seconds(2)) == [], "closed: the wait ends at once"


async def test_a_wait_ends_at_its_timeout(make_log: MakeLog) -> None:
    clock = FakeClock()
    log = await make_log(clock=clock)
    await log.open("s1", "alice")
    waiting = asyncio.ensure_future(log.wait("s1", 0, timeout=15))
    await asyncio.sleep(0.05)
    await clock.advance(14.9)
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await clock.advance(0.1)
    assert await asyncio.wait_for(waiting, seconds(2)) == []
    assert clock.pending() == 0, "its timer is cancelled"


async def test_an_event_published_while_a_wait_starts_is_not_missed(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    await writer.open("s1", "alice")
    first = await first_seq(writer, "s1")
    for round_ in range(20):
        waiting = asyncio.ensure_future(reader.wait("s1", first - 1 + round_, timeout=seconds(10)))
        await writer.publish(["alice"], note(str(round_)))
        events = await asyncio.wait_for(waiting, seconds(2))
        assert texts(events) == [str(round_)]


async def test_redis_many_waiting_sessions_share_one_blocking_read(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    reader = RedisEventLog(client, node="b")
    writer = RedisEventLog(client, node="a")
    await reader.start()
    try:
        sessions = [f"s{i}" for i in range(50)]
        for session in sessions:
            await writer.open(session, f"user{session}")
        waits = [asyncio.ensure_future(reader.wait(s, 0, timeout=seconds(10))) for s in sessions]
        await asyncio.sleep(0.2)
        # Blocked clients (flag b) of the whole server: the reader's XREAD,
        # between two of its reads none.
        blocked = []
        for _ in range(5):
            clients = await client.client_list()
            blocked.append(sum(1 for c in clients if "b" in c["flags"]))
            await asyncio.sleep(0.05)
        assert max(blocked) <= 1 and 1 in blocked, blocked
        await writer.publish([f"user{s}" for s in sessions], note("all"))
        results = await asyncio.wait_for(asyncio.gather(*waits), seconds(3))
        assert all(texts(r) == ["all"] for r in results)
    finally:
        await reader.stop()
        await redis_client.close(client)


async def test_redis_stop_wakes_every_waiter(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    log = RedisEventLog(client, node="a")
    await log.start()
    try:
        await log.open("s1", "alice")
        waiting = asyncio.ensure_future(log.wait("s1", 0, timeout=seconds(30)))
        await asyncio.sleep(0.05)
        await log.stop()
        assert await asyncio.wait_for(waiting, seconds(2)) == []
    finally:
        await log.stop()
        await redis_client.close(client)


async def test_redis_losing_its_data_expires_resumes_and_never_reuses_seqs(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    log = RedisEventLog(client, node="a")
    await log.start()
    try:
        await log.open("s1", "alice")
        for text in ("one", "two", "three"):
            await log.publish(["alice"], note(text))
        seen = await log.read("s1", 0)
        last = seen[-1].seq
        await client.flushdb()
        # The session is opened again (a refresh) before the client resumes,
        # and new events are appended.
        await log.open("s1", "alice")
        for text in ("four", "five", "six", "seven"):
            await log.publish(["alice"], note(text))
        for after in (seen[0].seq, seen[1].seq, last):
            with pytest.raises(EventsExpired):
                await log.read("s1", after)
        fresh = await log.read("s1", 0)
        assert texts(fresh) == ["four", "five", "six", "seven"]
        assert fresh[0].seq > last, "no seq of the lost log is issued again"
    finally:
        await log.stop()
        await redis_client.close(client)


async def test_redis_losing_its_data_under_a_waiting_reader_expires_it(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    log = RedisEventLog(client, node="a")
    await log.start()
    try:
        await log.open("s1", "alice")
        await log.publish(["alice"], note("one"))
        last = (await log.read("s1", 0))[-1].seq
        await client.flushdb()
        with pytest.raises(EventsExpired):
            await log.wait("s1", last, timeout=seconds(5))
    finally:
        await log.stop()
        await redis_client.close(client)


async def test_redis_unreachable_is_unavailable() -> None:
    client = redis_client.connect("redis://127.0.0.1:1/0")
    log = RedisEventLog(client, node="a")
    try:
        for call in (
            log.open("s1", "alice"),
            log.publish(["alice"], note("one")),
            log.read("s1", 0),
            log.wait("s1", 0, timeout=1),
            log.is_open("s1"),
        ):
            with pytest.raises(failures.Unavailable):
                await asyncio.wait_for(call, seconds(5))
    finally:
        await redis_client.close(client)


async def test_redis_a_node_that_stopped_reading_is_told_no_more(redis_url: str) -> None:
    clock = FakeClock()
    client = redis_client.connect(redis_url)
    reader = RedisEventLog(client, node="b", retention=120, clock=clock)
    writer = RedisEventLog(client, node="a", retention=120, clock=clock)
    try:
        await writer.open("s1", "alice")
        assert await reader.read("s1", 0) == []
        waiting = asyncio.ensure_future(reader.wait("s1", 0, timeout=1))
        await asyncio.sleep(0.05)
        await clock.advance(1)
        assert await asyncio.wait_for(waiting, seconds(2)) == []
        await writer.publish(["alice"], note("one"))
        assert await client.xlen("wac:inbox:b") == 1, "read a moment ago: told"
        await clock.advance(120.001)
        await writer.publish(["alice"], note("two"))
        assert await client.xlen("wac:inbox:b") == 1, "read a retention window ago: not told"
    finally:
        await redis_client.close(client)


async def test_redis_a_followed_session_is_read_once_then_handed_its_events(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    reader = RedisEventLog(client, node="b")
    writer = RedisEventLog(client, node="a")
    await reader.start()
    reads = 0
    read_log = reader._read_log

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read_log(*args, **kwargs)

    reader._read_log = counted  # type: ignore[method-assign]
    try:
        await writer.open("s1", "alice")
        after = 0
        for round_ in range(10):
            waiting = asyncio.ensure_future(reader.wait("s1", after, timeout=seconds(10)))
            await asyncio.sleep(0.01)
            await writer.publish(["alice"], note(str(round_)))
            await writer.publish(["alice"], note(f"{round_}+"))
            events = await asyncio.wait_for(waiting, seconds(2))
            if len(events) == 1:  # the second was published after the wake
                events += await asyncio.wait_for(reader.wait("s1", events[0].seq, timeout=seconds(10)), seconds(2))
            assert texts(events) == [str(round_), f"{round_}+"]
            after = events[-1].seq
        assert reads == 1, "one read routes the session here; its events come through the inbox"
    finally:
        await reader.stop()
        await redis_client.close(client)


async def test_redis_a_lost_notice_makes_the_reader_read_its_stream(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    reader = RedisEventLog(client, node="b")
    writer = RedisEventLog(client, node="a")
    await reader.start()
    try:
        await writer.open("s1", "alice")
        waiting = asyncio.ensure_future(reader.wait("s1", 0, timeout=seconds(10)))
        await asyncio.sleep(0.05)
        await writer.publish(["alice"], note("one"))
        (one,) = await asyncio.wait_for(waiting, seconds(2))
        # The notice of "two" never reaches node b (an inbox trimmed while
        # it was behind, say); that of "three" does.
        score = (await client.zscore("wac:evroute:s1", "b")) or 0
        await client.zrem("wac:evroute:s1", "b")
        await writer.publish(["alice"], note("two"))
        await client.zadd("wac:evroute:s1", {"b": score})
        waiting = asyncio.ensure_future(reader.wait("s1", one.seq, timeout=seconds(10)))
        await asyncio.sleep(0.05)
        await writer.publish(["alice"], note("three"))
        assert texts(await asyncio.wait_for(waiting, seconds(2))) == ["two", "three"]
    finally:
        await reader.stop()
        await redis_client.close(client)


async def test_an_event_with_no_fields_set_is_kept_like_any_other(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    await writer.open("s1", "alice")
    first = await first_seq(writer, "s1")
    waiting = asyncio.ensure_future(reader.wait("s1", first - 1, timeout=seconds(10)))
    await asyncio.sleep(0.05)
    await writer.publish(["alice"], events_pb2.Event())
    assert [e.seq for e in await asyncio.wait_for(waiting, seconds(2))] == [first]
    await writer.close("s1", events_pb2.Event())
    assert [e.seq for e in await reader.read("s1", first - 1)] == [first, first + 1]


async def test_a_publish_to_many_subscribers_reaches_each_once(make_log: MakeLog) -> None:
    log = await make_log()
    users = [f"user{i}" for i in range(600)]  # more than one append script's share on Redis
    for user in users:
        await log.open(f"s-{user}", user)
    await log.publish(users, note("all"), exclude_session="s-user7")
    for user in users:
        expected = [] if user == "user7" else ["all"]
        assert texts(await log.read(f"s-{user}", 0)) == expected


class Taker:
    """A listener that takes ``room`` events, then refuses."""

    def __init__(self, room: int = 100) -> None:
        self.room = room
        self.taken: list[tuple[int, str]] = []

    def __call__(self, seq: int, event: events_pb2.Event) -> bool:
        if len(self.taken) >= self.room:
            return False
        assert event.HasField("time") and event.seq == 0, "stamped with its time, not its seq"
        self.taken.append((seq, event.session_revoked.session_id))
        return True


async def listened(reader: EventLog, writer: EventLog, taker: Taker, **options: Any) -> tuple[int, Listening]:
    """s1 opened, one event published and waited for (a Redis node then
    follows the session), and a listener after it; its seq."""
    await writer.open("s1", "alice")
    first = await first_seq(writer, "s1")
    await writer.publish(["alice"], note("one"))
    assert texts(await reader.wait("s1", first - 1, timeout=seconds(10))) == ["one"]
    assert reader.listen("s1", first - 1, taker, seconds(10)) is None, "not the last seq issued"
    listening = reader.listen("s1", first, taker, options.get("timeout", seconds(10)))
    assert listening is not None
    return first, listening


async def test_a_listener_is_handed_each_event_until_it_refuses_one(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    taker = Taker(room=2)
    first, listening = await listened(reader, writer, taker)
    for text in ("two", "three", "four", "five"):
        await writer.publish(["alice"], note(text))
    await asyncio.wait_for(listening.ended, seconds(2))
    listening.cancel()
    assert taker.taken == [(first + 1, "two"), (first + 2, "three")]
    assert listening.last == first + 2
    assert texts(await reader.read("s1", listening.last)) == ["four", "five"]


async def test_a_listener_is_handed_the_final_event_and_ended_by_a_close(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    taker = Taker()
    first, listening = await listened(reader, writer, taker)
    await writer.close("s1", note("bye"))
    await asyncio.wait_for(listening.ended, seconds(2))
    listening.cancel()
    assert taker.taken == [(first + 1, "bye")]
    assert reader.listen("s1", first + 1, taker, seconds(10)) is None, "closed"


async def test_a_cancelled_listener_is_handed_nothing_more(make_log: MakeLog) -> None:
    reader = await make_log("b")
    writer = await make_log("a")
    taker = Taker()
    first, listening = await listened(reader, writer, taker)
    listening.cancel()
    await writer.publish(["alice"], note("two"))
    waiting = asyncio.ensure_future(reader.wait("s1", first, timeout=seconds(10)))
    assert texts(await asyncio.wait_for(waiting, seconds(2))) == ["two"]
    assert taker.taken == [] and not listening.ended.done()


async def test_a_listen_ends_at_its_timeout(make_log: MakeLog) -> None:
    clock = FakeClock()
    log = await make_log(clock=clock)
    _, listening = await listened(log, log, Taker(), timeout=15)
    await clock.advance(14.9)
    await asyncio.sleep(0.05)
    assert not listening.ended.done()
    await clock.advance(0.1)
    await asyncio.wait_for(listening.ended, seconds(2))
    listening.cancel()
    assert clock.pending() == 0, "its timer is cancelled"


async def redis_pair(redis_url: str) -> tuple[Any, RedisEventLog, RedisEventLog]:
    client = redis_client.connect(redis_url)
    reader = RedisEventLog(client, node="b")
    writer = RedisEventLog(client, node="a")
    await reader.start()
    return client, reader, writer


async def test_redis_a_lost_notice_ends_the_listener_where_it_is(redis_url: str) -> None:
    client, reader, writer = await redis_pair(redis_url)
    try:
        taker = Taker()
        first, listening = await listened(reader, writer, taker)
        # The notice of "two" never reaches node b; that of "three" does.
        score = (await client.zscore("wac:evroute:s1", "b")) or 0
        await client.zrem("wac:evroute:s1", "b")
        await writer.publish(["alice"], note("two"))
        await client.zadd("wac:evroute:s1", {"b": score})
        await writer.publish(["alice"], note("three"))
        await asyncio.wait_for(listening.ended, seconds(2))
        listening.cancel()
        assert taker.taken == [] and listening.last == first
        assert texts(await reader.wait("s1", listening.last, timeout=0)) == ["two", "three"]
    finally:
        await reader.stop()
        await redis_client.close(client)


async def test_redis_a_listener_is_handed_its_events_when_the_node_forgot_the_session(redis_url: str) -> None:
    client, reader, writer = await redis_pair(redis_url)
    try:
        taker = Taker()
        first, listening = await listened(reader, writer, taker)
        # Another reader of the session here found it closed, or a gap:
        # what the node knew of it is dropped; the listener keeps its own count.
        reader._follows.clear()
        await writer.publish(["alice"], note("two"))
        await writer.close("s1", note("bye"))
        await asyncio.wait_for(listening.ended, seconds(2))
        listening.cancel()
        assert taker.taken == [(first + 1, "two"), (first + 2, "bye")]
    finally:
        await reader.stop()
        await redis_client.close(client)
