"""PresenceService on a fake clock: the coalescing window and the device
grace period, asserted to the instant. A real SQLite store, the in-memory
event log and device registry wired as core/server.py wires them; a watcher
is a session whose log is read directly.

Fake time proves what has *not* happened (a window not over cannot have
flushed, a grace period not over cannot have lost a device); what a due
timer starts is awaited with ``eventually`` where it writes to the store,
which it does in the store's own thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import failures
from core.cluster.devices import LocalDeviceRegistry
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.events.memory import MemoryEventLog
from core.presence.handler import EMIT_RETRY_SECONDS, Named, PresenceHandler
from core.presence.rules import Status
from core.presence.store import SqlPresenceStore
from settings.config import PresenceConfig, sqlite_url
from tests.calls.support import eventually
from tests.support.clock import EPOCH, FakeClock
from wac.v1 import events_pb2, presence_pb2

WINDOW = PresenceConfig().coalesce_ms / 1000
GRACE = PresenceConfig().grace_period
TICK = 0.001
Wire = presence_pb2.Presence.Status


class People:
    """The subscriber read-cache's face that presence uses."""

    async def display_name(self, username: str) -> str | None:
        return f"{username.title()} Example"

    async def get_many(self, usernames: Sequence[str]) -> dict[str, Named | None]:
        return {name: Person(f"{name.title()} Example") for name in usernames}


@dataclass(frozen=True)
class Person:
    display_name: str


class Links:
    """alice's contacts link bob: bob watches alice (and nobody watches bob)."""

    links = {"alice": {"bob"}}

    async def linked_by(self, owner: str) -> set[str]:
        return set(self.links.get(owner, set()))

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        return {owner for owner in owners if subject in self.links.get(owner, set())}


class FlakyEventLog(MemoryEventLog):
    """The in-memory log, refusing appends while ``down`` (as the Redis log
    does while Redis restarts)."""

    down = False

    async def publish(self, usernames: Collection[str], event: events_pb2.Event, **kwargs: object) -> None:
        if self.down:
            raise failures.Unavailable("the event log (Redis) is unavailable: Connection closed by server.")
        await super().publish(usernames, event, **kwargs)  # type: ignore[arg-type]


@dataclass
class Rig:
    clock: FakeClock
    events: FlakyEventLog
    devices: LocalDeviceRegistry
    presence: PresenceHandler

    async def connect(self, username: str, session_id: str) -> None:
        await self.events.open(session_id, username)
        await self.devices.stream_opened(username, session_id)

    async def heard(self, session_id: str, after: int = 0) -> list[presence_pb2.Presence]:
        """alice's presenceChanged events in the session's log after seq ``after``."""
        events = await self.events.read(session_id, after)
        return [e.presence_changed for e in events if e.presence_changed.username == "alice"]

    async def last_seq(self, session_id: str) -> int:
        events = await self.events.read(session_id, 0)
        return events[-1].seq if events else 0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    clock = FakeClock()
    events = FlakyEventLog(clock=clock)
    devices = LocalDeviceRegistry(grace_period=GRACE, clock=clock)
    presence = PresenceHandler(
        SqlPresenceStore(engine), events, Links(), People(), coalesce_interval=WINDOW, clock=clock
    )
    devices.on_online(presence.device_online)
    devices.on_lost(presence.device_lost)
    await presence.start()
    rig_ = Rig(clock, events, devices, presence)
    await rig_.connect("bob", "b1")
    await rig_.connect("alice", "a1")
    try:
        yield rig_
    finally:
        await presence.stop()
        await dispose(engine)


def seen(changes: list[presence_pb2.Presence]) -> list[tuple[int, str]]:
    return [(p.status, p.note) for p in changes]


# --- Coalescing. ----------------------------------------------------------------


async def test_a_burst_reaches_a_watcher_as_its_first_and_last_change(rig: Rig) -> None:
    assert seen(await rig.heard("b1")) == [(Wire.AVAILABLE, "")]
    await rig.clock.advance(WINDOW)  # past the window of that change
    after = await rig.last_seq("b1")

    statuses = [Status.AWAY, Status.BUSY] * 5
    for index, status in enumerate(statuses):
        await rig.presence.publish("alice", "a1", status, f"change {index + 1}")
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "change 1")], "the first at once"
    await rig.clock.advance(WINDOW - TICK)
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "change 1")], "the rest held for the window"
    await rig.clock.advance(TICK)
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "change 1"), (Wire.BUSY, "change 10")]
    await rig.clock.advance(10 * WINDOW)
    assert len(await rig.heard("b1", after)) == 2, "nothing more"
    assert rig.clock.pending() == 0


async def test_a_change_undone_within_the_window_reaches_no_watcher(rig: Rig) -> None:
    await rig.clock.advance(WINDOW)  # past the window of alice's coming online
    after = await rig.last_seq("b1")

    await rig.presence.publish("alice", "a1", Status.AWAY, "out")  # heard at once
    await rig.presence.publish("alice", "a1", Status.BUSY, "meeting")  # held for the window ...
    await rig.presence.publish("alice", "a1", Status.AWAY, "out")  # ... and undone within it
    await rig.clock.advance(WINDOW + 0.05)
    await rig.presence.publish("alice", "a1", Status.DO_NOT_DISTURB, "focus")
    await rig.clock.advance(10 * WINDOW)

    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "out"), (Wire.DO_NOT_DISTURB, "focus")]
    assert rig.clock.pending() == 0


# --- The event log out of reach. ---------------------------------------------


async def test_a_change_the_event_log_refused_reaches_the_watcher_once_it_is_back(rig: Rig) -> None:
    await rig.clock.advance(WINDOW)
    after = await rig.last_seq("b1")

    rig.events.down = True
    with pytest.raises(failures.Unavailable):
        await rig.presence.publish("alice", "a1", Status.AWAY, "refused at once")
    # The client retries: the row is already written, nothing new to emit.
    await rig.presence.publish("alice", "a1", Status.AWAY, "refused at once")
    await rig.clock.advance(EMIT_RETRY_SECONDS)
    assert await rig.heard("b1", after) == [], "still down"
    rig.events.down = False
    await rig.clock.advance(EMIT_RETRY_SECONDS)
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "refused at once")]
    await rig.clock.advance(10 * EMIT_RETRY_SECONDS)
    assert len(await rig.heard("b1", after)) == 1, "told once"
    assert rig.clock.pending() == 0


async def test_a_held_change_the_event_log_refused_reaches_the_watcher_once_it_is_back(rig: Rig) -> None:
    await rig.clock.advance(WINDOW)
    after = await rig.last_seq("b1")
    await rig.presence.publish("alice", "a1", Status.AWAY, "first")  # heard at once
    await rig.presence.publish("alice", "a1", Status.BUSY, "held")  # held for the window

    rig.events.down = True
    await rig.clock.advance(WINDOW)  # the window's flush is refused
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "first")]
    rig.events.down = False
    await rig.clock.advance(EMIT_RETRY_SECONDS)
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "first"), (Wire.BUSY, "held")]
    assert rig.clock.pending() == 0


# --- The grace period. --------------------------------------------------------------


async def test_a_device_goes_offline_after_the_grace_period_and_keeps_its_status(rig: Rig) -> None:
    await rig.presence.publish("alice", "a1", Status.AWAY, "gone fishing")
    await rig.clock.advance(WINDOW)
    assert seen(await rig.heard("b1"))[-1] == (Wire.AWAY, "gone fishing")
    after = await rig.last_seq("b1")

    closed = rig.clock.time()
    await rig.devices.stream_closed("alice", "a1")
    await rig.clock.advance(GRACE - TICK)
    assert (await rig.presence.read("bob", "alice")).state.status is Status.AWAY, "still within the grace period"
    assert await rig.heard("b1", after) == []
    await rig.clock.advance(TICK)

    async def offline() -> list[presence_pb2.Presence]:
        return await rig.heard("b1", after)

    (gone,) = await eventually(offline)
    assert (gone.status, gone.note) == (Wire.OFFLINE, "")
    assert closed + GRACE == EPOCH + WINDOW + GRACE
    assert gone.last_seen_time.ToMicroseconds() == round((closed + GRACE) * 1e6)
    after = await rig.last_seq("b1")

    # A reconnecting device keeps what it published, not AVAILABLE (heard
    # when the window of the offline change is over).
    await rig.connect("alice", "a1")
    await rig.clock.advance(WINDOW)
    assert seen(await rig.heard("b1", after)) == [(Wire.AWAY, "gone fishing")]


async def test_a_reconnect_within_the_grace_period_does_not_flap(rig: Rig) -> None:
    await rig.clock.advance(WINDOW)
    after = await rig.last_seq("b1")
    await rig.devices.stream_closed("alice", "a1")
    await rig.clock.advance(GRACE - TICK)
    await rig.devices.stream_opened("alice", "a1")
    assert rig.clock.pending() == 0, "the reconnect cancelled the grace timer"
    await rig.clock.advance(10 * GRACE)
    assert await rig.heard("b1", after) == []
    assert (await rig.presence.read("bob", "alice")).state.status is Status.AVAILABLE
