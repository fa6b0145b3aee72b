"""The in-memory event log's bounds in time, on a fake clock: events kept
for exactly the retention window, logs nobody reads swept after it, and a
reader's wait that ends at its timeout."""

from __future__ import annotations

import asyncio

import pytest

from core.events.log import EventsExpired
from core.events.memory import MemoryEventLog
from tests.support.clock import EPOCH, FakeClock
from wac.v1 import events_pb2

RETENTION = 120.0
TICK = 0.001


def note(text: str) -> events_pb2.Event:
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=text))


def texts(events: list[events_pb2.Event]) -> list[str]:
    return [e.session_revoked.session_id for e in events]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(clock: FakeClock) -> MemoryEventLog:
    return MemoryEventLog(retention=RETENTION, clock=clock)


async def test_events_are_kept_for_the_retention_window_and_no_longer(clock: FakeClock, log: MemoryEventLog) -> None:
    await log.open("s1", "alice")
    await log.publish(["alice"], note("one"))
    await log.publish(["alice"], note("two"))
    await clock.advance(10)
    await log.publish(["alice"], note("three"))
    first = (await log.read("s1", 0))[0]
    assert (first.seq, first.time.ToMicroseconds()) == (1, EPOCH * 1e6)

    await clock.advance(RETENTION - 10)
    assert texts(await log.read("s1", 1)) == ["two", "three"], "at the window's edge: kept"
    await clock.advance(TICK)
    with pytest.raises(EventsExpired):
        await log.read("s1", 1)  # "two" is gone: a reader after seq 1 must reload
    assert texts(await log.read("s1", 2)) == ["three"]
    assert texts(await log.read("s1", 0)) == ["three"], "a new reader gets what is kept"


async def test_a_wait_ends_at_its_timeout_or_at_the_next_event(clock: FakeClock, log: MemoryEventLog) -> None:
    await log.open("s1", "alice")
    waiting = asyncio.ensure_future(log.wait("s1", 0, timeout=15))
    await clock.advance(15 - TICK)
    assert not waiting.done()
    await clock.advance(TICK)
    assert waiting.done() and await waiting == []

    waiting = asyncio.ensure_future(log.wait("s1", 0, timeout=15))
    await clock.advance(5)
    await log.publish(["alice"], note("one"))
    assert texts(await waiting) == ["one"]
    assert clock.pending() == 0, "its timer is cancelled"


async def test_logs_nobody_read_for_the_retention_window_are_swept(clock: FakeClock, log: MemoryEventLog) -> None:
    await log.open("idle", "alice")
    await log.open("read", "bob")
    await log.publish(["alice", "bob"], note("one"))
    await clock.advance(RETENTION / 2)
    await log.read("read", 0)
    await clock.advance(RETENTION / 2)
    log.sweep()
    assert await log.is_open("idle"), "unread for exactly the window: kept"
    await clock.advance(TICK)
    log.sweep()
    assert not await log.is_open("idle")
    with pytest.raises(EventsExpired):
        await log.read("idle", 1)
    assert await log.is_open("read")
    await log.publish(["alice", "bob"], note("two"))
    assert texts(await log.read("read", 1)) == ["two"]
