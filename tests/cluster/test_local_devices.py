"""The embedded device registry (LocalDeviceRegistry) on a fake clock: a device whose last stream
closed stays online for exactly the grace period, then is lost."""

from __future__ import annotations

import pytest

from core.cluster.devices import LocalDeviceRegistry
from tests.support.clock import EPOCH, FakeClock

GRACE = 30.0
TICK = 0.001


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lost(clock: FakeClock) -> list[tuple[str, str, float]]:
    return []


@pytest.fixture
def devices(clock: FakeClock, lost: list[tuple[str, str, float]]) -> LocalDeviceRegistry:
    registry = LocalDeviceRegistry(grace_period=GRACE, clock=clock)

    async def on_lost(username: str, session_id: str) -> None:
        lost.append((username, session_id, clock.time()))

    registry.on_lost(on_lost)
    return registry


async def test_a_device_is_lost_when_the_grace_period_after_its_last_stream_is_over(
    clock: FakeClock, devices: LocalDeviceRegistry, lost: list[tuple[str, str, float]]
) -> None:
    online: list[str] = []

    async def on_online(username: str, session_id: str) -> None:
        online.append(session_id)

    devices.on_online(on_online)
    await devices.stream_opened("alice", "s1")
    await devices.stream_opened("alice", "s1")  # a second stream of the same device
    assert online == ["s1"], "online once, with its first stream"
    await clock.advance(5)
    await devices.stream_closed("alice", "s1")
    assert clock.pending() == 0, "one stream is still open: no grace yet"
    await devices.stream_closed("alice", "s1")
    assert devices.last_seen("alice") == EPOCH + 5

    await clock.advance(GRACE - TICK)
    assert await devices.online_devices("alice") == ["s1"], "within the grace period"
    assert lost == []
    await clock.advance(TICK)
    assert lost == [("alice", "s1", EPOCH + 5 + GRACE)]
    assert await devices.online_devices("alice") == []


async def test_a_stream_reopened_within_the_grace_period_keeps_the_device(
    clock: FakeClock, devices: LocalDeviceRegistry, lost: list[tuple[str, str, float]]
) -> None:
    await devices.stream_opened("alice", "s1")
    await devices.stream_closed("alice", "s1")
    await clock.advance(GRACE - TICK)
    await devices.stream_opened("alice", "s1")
    assert clock.pending() == 0, "the grace timer is cancelled"
    await clock.advance(10 * GRACE)
    assert lost == []
    assert await devices.online_devices("alice") == ["s1"]


async def test_an_ended_session_is_lost_at_once(
    clock: FakeClock, devices: LocalDeviceRegistry, lost: list[tuple[str, str, float]]
) -> None:
    await devices.stream_opened("alice", "s1")
    await devices.stream_closed("alice", "s1")
    await devices.ended("alice", "s1")
    assert lost == [("alice", "s1", EPOCH)]
    await clock.advance(10 * GRACE)
    assert lost == [("alice", "s1", EPOCH)], "told once: its grace timer went with it"
    assert clock.pending() == 0


async def test_open_streams_are_counted_apart_from_being_online(clock: FakeClock, devices: LocalDeviceRegistry) -> None:
    assert devices.streams("alice", "s1") == 0
    await devices.stream_opened("alice", "s1")
    await devices.stream_opened("alice", "s1")
    assert devices.streams("alice", "s1") == 2
    await devices.stream_closed("alice", "s1")
    await devices.stream_closed("alice", "s1")
    # Online through its grace period, with no stream: the grace timer runs.
    assert (devices.streams("alice", "s1"), await devices.online_devices("alice")) == (0, ["s1"])
    assert clock.delays() == [GRACE]
    await devices.stream_opened("alice", "s1")
    assert (devices.streams("alice", "s1"), clock.delays()) == (1, [])
