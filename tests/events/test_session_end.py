"""A stream that starts after its session ended: the final events, and no
device brought back online (a Subscribe authenticated just before a logout
reaches the servicer just after it)."""

from __future__ import annotations

from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import LocalDeviceRegistry
from core.events.handler import EventsHandler
from core.events.memory import MemoryEventLog
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
    delivered = [event async for event in handler.follow(alice, 0, pending)]

    assert [e.WhichOneof("payload") for e in delivered] == ["session_revoked"]
    assert await devices.online_devices("alice") == []


async def test_a_live_session_is_online_while_its_stream_is_open() -> None:
    events = MemoryEventLog()
    devices = LocalDeviceRegistry(grace_period=30)
    handler = EventsHandler(events, devices)
    alice = SubscriberPrincipal("alice", "s1", frozenset(), expires_at=1e12)
    pending = await handler.open(alice, 0)
    stream = handler.follow(alice, 0, pending)
    await events.publish(["alice"], events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id="x")))
    first = await anext(stream)
    assert first.seq == 1
    assert await devices.online_devices("alice") == ["s1"]
    await stream.aclose()
