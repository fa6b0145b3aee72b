"""Presence's display names come from identity's subscriber read-cache, on
the fake clock: read once per staleness bound, and a rename made through
identity (which evicts the name, then tells presence) is announced to the
watchers at once, with the new name, as before the cache was shared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from core.cluster.devices import LocalDeviceRegistry
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.events.memory import MemoryEventLog
from core.identity.store import SubscriberRow
from core.identity.subscribers import STALENESS, SubscriberCache
from core.presence.handler import PresenceHandler
from core.presence.rules import Status
from core.presence.store import SqlPresenceStore
from settings.config import PresenceConfig, sqlite_url
from tests.support.clock import EPOCH, FakeClock
from wac.v1 import presence_pb2

WINDOW = PresenceConfig().coalesce_ms / 1000
Wire = presence_pb2.Presence.Status


class Rows:
    """Identity's store of subscribers, counting reads."""

    def __init__(self) -> None:
        self.rows = {
            name: SubscriberRow(name, f"{name.title()} Example", (), "", ("user",), False, "hash", EPOCH, EPOCH)
            for name in ("alice", "bob")
        }
        self.reads: list[str] = []

    async def get_subscriber(self, username: str) -> SubscriberRow | None:
        self.reads.append(username)
        return self.rows.get(username)

    async def get_subscribers(self, usernames: Sequence[str]) -> list[SubscriberRow]:
        self.reads.extend(usernames)
        return [self.rows[name] for name in usernames if name in self.rows]


class Links:
    """bob watches alice."""

    async def linked_by(self, owner: str) -> set[str]:
        return {"bob"} if owner == "alice" else set()

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        return {owner for owner in owners if subject == "bob" and owner == "alice"}


@dataclass
class Rig:
    clock: FakeClock
    rows: Rows
    names: SubscriberCache
    events: MemoryEventLog
    presence: PresenceHandler

    async def heard(self, after: int = 0) -> list[presence_pb2.Presence]:
        """alice's presenceChanged events in bob's log after seq ``after``."""
        events = await self.events.read("b1", after)
        return [e.presence_changed for e in events if e.presence_changed.username == "alice"]

    async def last_seq(self) -> int:
        events = await self.events.read("b1", 0)
        return events[-1].seq if events else 0

    async def change(self, **fields: object) -> None:
        """What identity does for a change: write, evict, tell the listeners."""
        row = self.rows.rows["alice"] = replace(self.rows.rows["alice"], **fields)  # type: ignore[arg-type]
        self.names.forget("alice")
        await self.presence.subscriber_changed("alice", row)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    clock = FakeClock()
    rows = Rows()
    names = SubscriberCache(rows, {"user": ()}, clock)
    events = MemoryEventLog(clock=clock)
    devices = LocalDeviceRegistry(grace_period=PresenceConfig().grace_period, clock=clock)
    presence = PresenceHandler(SqlPresenceStore(engine), events, Links(), names, coalesce_interval=WINDOW, clock=clock)
    devices.on_online(presence.device_online)
    devices.on_lost(presence.device_lost)
    await presence.start()
    for username, session_id in (("bob", "b1"), ("alice", "a1")):
        await events.open(session_id, username)
        await devices.stream_opened(username, session_id)
    try:
        yield Rig(clock, rows, names, events, presence)
    finally:
        await presence.stop()
        await dispose(engine)


async def test_a_rename_is_announced_at_once_with_the_new_name(rig: Rig) -> None:
    assert [p.display_name for p in await rig.heard()] == ["Alice Example"]
    await rig.clock.advance(WINDOW)
    after = await rig.last_seq()
    await rig.change(display_name="Alice Renamed")
    (renamed,) = await rig.heard(after)
    assert (renamed.display_name, renamed.status) == ("Alice Renamed", Wire.AVAILABLE)
    after = await rig.last_seq()
    await rig.change(roles=("user", "admin"))  # not a rename: nothing to announce
    await rig.clock.advance(10 * WINDOW)
    assert await rig.heard(after) == []


async def test_names_are_read_once_per_staleness_bound(rig: Rig) -> None:
    await rig.clock.advance(WINDOW)
    rig.rows.reads.clear()
    await rig.presence.publish("alice", "a1", Status.AWAY, "out")
    view = await rig.presence.read("bob", "alice")
    assert view.display_name == "Alice Example"
    assert rig.rows.reads == [], "within the bound: from memory"
    await rig.clock.advance(STALENESS)
    await rig.presence.read("bob", "alice")
    assert rig.rows.reads == ["alice"], "once the bound is over: read again"


async def test_an_unknown_subscriber_is_not_found(rig: Rig) -> None:
    assert await rig.presence.read_many(None, ["alice", "nobody"]) == [await rig.presence.read(None, "alice")]
