"""Presence rows on SQLite and PostgreSQL: a device's write is one upsert
that returns the subscriber's devices as it left them (the handler does not
read them again); two stores on one database stand for two cores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.presence import tables as t
from core.presence.rules import Status
from core.presence.store import SqlPresenceStore
from tests.support.sql import two_cores


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SqlPresenceStore, SqlPresenceStore]]:
    async with two_cores(request, tmp_path, t.presence_devices) as (one, other):
        yield SqlPresenceStore(one), SqlPresenceStore(other)


async def test_a_new_device_comes_online_available(stores: tuple[SqlPresenceStore, SqlPresenceStore]) -> None:
    store = stores[0]
    rows = await store.device_online("alice", "s1", 10.0)
    assert [(r.device, r.status, r.note, r.connected, r.last_seen, r.updated_at) for r in rows] == [
        ("s1", Status.AVAILABLE, "", True, 10.0, 10.0)
    ]
    assert rows == await store.devices("alice")


async def test_a_device_back_online_keeps_what_it_published(stores: tuple[SqlPresenceStore, SqlPresenceStore]) -> None:
    store = stores[0]
    await store.device_online("alice", "s1", 10.0)
    await store.publish("alice", "s1", Status.AWAY, "lunch", 11.0, connected=True)
    await store.device_lost("s1", 12.0)
    other = await store.device_online("alice", "s2", 13.0)
    assert {(r.device, r.connected) for r in other} == {("s1", False), ("s2", True)}
    rows = await store.device_online("alice", "s1", 14.0)
    back = next(r for r in rows if r.device == "s1")
    # Connected again and seen now; the published status, note and time stay.
    assert (back.status, back.note, back.updated_at, back.connected, back.last_seen) == (
        Status.AWAY,
        "lunch",
        11.0,
        True,
        14.0,
    )
    assert sorted(rows, key=lambda r: r.device) == sorted(await store.devices("alice"), key=lambda r: r.device)


async def test_publishing_keeps_the_connection_state_of_a_known_device(
    stores: tuple[SqlPresenceStore, SqlPresenceStore],
) -> None:
    store = stores[0]
    # Never connected: no last-seen time, not connected.
    (new,) = await store.publish("alice", "s1", Status.BUSY, "", 5.0, connected=False)
    assert (new.status, new.connected, new.last_seen) == (Status.BUSY, False, 0.0)
    await store.device_online("alice", "s1", 6.0)
    # ``connected`` applies to a new row only: the device stays connected.
    (row,) = await store.publish("alice", "s1", Status.DO_NOT_DISTURB, "focus", 7.0, connected=False)
    assert (row.status, row.note, row.updated_at, row.connected, row.last_seen) == (
        Status.DO_NOT_DISTURB,
        "focus",
        7.0,
        True,
        6.0,
    )


async def test_two_cores_bringing_one_device_online_at_once_write_one_row(
    stores: tuple[SqlPresenceStore, SqlPresenceStore],
) -> None:
    await asyncio.gather(*(stores[i % 2].device_online("alice", "s1", float(i)) for i in range(10)))
    (row,) = await stores[0].devices("alice")
    assert row.device == "s1" and row.connected and row.status is Status.AVAILABLE
