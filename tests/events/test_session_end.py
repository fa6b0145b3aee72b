"""A stream that starts after its session ended: the final events, and no
device brought back online (a Subscribe authenticated just before a logout
reaches the servicer just after it)."""

from __future__ import annotations

import asyncio
from typing import Any

from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import LocalDeviceRegistry
from core.events.handler import EventsHandler
from core.events.memory import MemoryEventLog
from tests.support.clock import FakeClock
from tests.support.outbox import Collected
from wac.v1 import events_pb2


async def test_a_stream_opened_after_the_session_ended_brings_no_device_online() -> None:
    events = MemoryEventLog()
    devices = LocalDeviceRegistry(grace_period=30)
    lost: list[str] = []

    async def on_lost(username: str, session_id: str) -> None:
        lost.append(session_id)

    devices.on_lost(on_lost)
    handler = EventsHandler(events, devices)
    alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
    await events.open("s1", "alice")
    final = events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id="s1", reason="logout"))
    await events.close("s1", final)

    pending = await handler.open(alice, 0)
    outbox = Collected()
    await handler.follow(alice, 0, pending, outbox)

    assert [e.WhichOneof("payload") for _, e in outbox.events] == ["session_revoked"]
    assert await devices.online_devices("alice") == []


async def test_a_live_session_is_online_while_its_stream_is_open() -> None:
    events = MemoryEventLog()
    devices = LocalDeviceRegistry(grace_period=30)
    handler = EventsHandler(events, devices)
    alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
    pending = await handler.open(alice, 0)
    outbox = Collected()
    following = asyncio.ensure_future(handler.follow(alice, 0, pending, outbox))
    for _ in range(10):
        await asyncio.sleep(0)
    await events.publish(["alice"], events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id="x")))
    assert [seq for seq, _ in outbox.events] == [1]
    assert outbox.offered == 1, "handed at publish time, not read by the follower"
    assert await devices.online_devices("alice") == ["s1"]
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)


async def test_a_full_outbox_gets_the_rest_in_order_once_it_has_room() -> None:
    events = MemoryEventLog()
    handler = EventsHandler(events, LocalDeviceRegistry(grace_period=30))
    alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
    pending = await handler.open(alice, 0)
    outbox = Collected(room=2)
    following = asyncio.ensure_future(handler.follow(alice, 0, pending, outbox))
    for _ in range(10):
        await asyncio.sleep(0)
    for index in range(5):
        note = events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=str(index)))
        await events.publish(["alice"], note)
    assert outbox.offered == 2, "the third is refused: the follower reads from there"
    for _ in range(10):
        await asyncio.sleep(0)
    await events.close("s1")
    await asyncio.wait_for(following, 2)
    assert [seq for seq, _ in outbox.events] == [1, 2, 3, 4, 5]
    assert [e.session_revoked.session_id for _, e in outbox.events] == ["0", "1", "2", "3", "4"]


async def test_an_idle_listening_stream_wakes_once_a_listen_period() -> None:
    clock = FakeClock()
    events = MemoryEventLog(clock=clock)
    listens: list[float] = []
    listen = events.listen

    def counted(*args: Any) -> Any:
        listens.append(clock.time())
        return listen(*args)

    events.listen = counted  # type: ignore[method-assign]
    handler = EventsHandler(events, LocalDeviceRegistry(grace_period=30, clock=clock))
    alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
    pending = await handler.open(alice, 0)
    following = asyncio.ensure_future(handler.follow(alice, 0, pending, Collected()))
    try:
        for _ in range(10):
            await asyncio.sleep(0)
        start = clock.time()
        for _ in range(60):  # a second at a time, the follower running in between
            await clock.advance(1)
            for _ in range(10):
                await asyncio.sleep(0)
        assert listens == [start, start + 60], "once a minute, not every WAKE_SECONDS"
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
