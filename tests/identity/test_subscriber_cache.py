"""The subscriber read-cache (core/identity/subscribers.py) on the fake
clock: a subscriber is read from the store at most once per staleness bound,
a change made through identity is seen at once, a change made by another
process within the bound; then through the identity handler that owns it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from core.db.engine import create_engine
from core.db.work import dispose
from core.identity.results import Inactive, Verified
from core.identity.store import IdentityStore, SubscriberRow
from core.identity.subscribers import STALENESS, SubscriberCache
from tests.identity.test_handler import PASSWORD, handler
from tests.support import core as support
from tests.support.clock import EPOCH, FakeClock
from tests.support.sql import statements
from wac.v1 import identity_pb2

ROLES = {"user": ("call.audio",), "admin": ("admin",)}
TICK = 0.001


def row(username: str, display_name: str = "", roles: tuple[str, ...] = ("user",)) -> SubscriberRow:
    return SubscriberRow(username, display_name, (), "", roles, False, "hash", EPOCH, EPOCH)


class Rows:
    """A store of subscribers that counts its reads."""

    def __init__(self, *rows: SubscriberRow) -> None:
        self.rows = {r.username: r for r in rows}
        self.reads: list[str] = []
        # Set to hold reads until the test lets them go.
        self.gate: asyncio.Event | None = None

    async def get_subscriber(self, username: str) -> SubscriberRow | None:
        self.reads.append(username)
        found = self.rows.get(username)
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def get_subscribers(self, usernames: Sequence[str]) -> list[SubscriberRow]:
        self.reads.append(",".join(usernames))
        return [self.rows[name] for name in usernames if name in self.rows]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_subscriber_is_read_once_per_staleness_bound(clock: FakeClock) -> None:
    rows = Rows(row("alice", "Alice Liddell"))
    cache = SubscriberCache(rows, ROLES, clock)
    known = await cache.get("alice")
    assert known is not None and known.permissions == frozenset({"call.audio"})
    assert await cache.display_name("alice") == "Alice Liddell"
    assert await cache.exists("alice")
    await clock.advance(STALENESS - TICK)
    assert await cache.display_name("alice") == "Alice Liddell"
    assert rows.reads == ["alice"], "one read within the bound"
    await clock.advance(TICK)
    await cache.get("alice")
    assert rows.reads == ["alice", "alice"], "read again once the bound is over"


async def test_a_batch_reads_only_what_is_not_cached_in_one_query(clock: FakeClock) -> None:
    rows = Rows(row("alice", "Alice Liddell"), row("bob"), row("carol", "Carol"))
    cache = SubscriberCache(rows, ROLES, clock)
    await cache.get("alice")
    known = await cache.get_many(["alice", "bob", "nobody", "carol"])
    assert {name: k and k.display_name for name, k in known.items()} == {
        "alice": "Alice Liddell",
        "bob": "bob",
        "nobody": None,
        "carol": "Carol",
    }
    assert rows.reads == ["alice", "bob,nobody,carol"], "the misses in one read"
    assert await cache.get_many(["bob", "nobody"]) == {"bob": known["bob"], "nobody": None}
    assert len(rows.reads) == 2, "the batch's answers are kept, the unknown one too"


async def test_a_change_elsewhere_is_seen_within_the_bound(clock: FakeClock) -> None:
    rows = Rows(row("alice", "Alice"))
    cache = SubscriberCache(rows, ROLES, clock)
    assert await cache.display_name("alice") == "Alice"
    # Another process renames her and makes her an admin: nobody tells us.
    rows.rows["alice"] = row("alice", "Alice Renamed", ("user", "admin"))
    await clock.advance(STALENESS - TICK)
    assert await cache.display_name("alice") == "Alice", "stale, within the bound"
    await clock.advance(TICK)
    known = await cache.get("alice")
    assert known is not None and known.display_name == "Alice Renamed"
    assert known.permissions == frozenset({"call.audio", "admin"})


async def test_an_unknown_subscriber_is_remembered_too(clock: FakeClock) -> None:
    rows = Rows()
    cache = SubscriberCache(rows, ROLES, clock)
    assert await cache.get("nobody") is None
    assert not await cache.exists("nobody")
    assert await cache.display_name("nobody") is None
    assert rows.reads == ["nobody"]
    rows.rows["nobody"] = row("nobody")  # created by another process
    await clock.advance(STALENESS)
    assert await cache.exists("nobody")


async def test_forget_makes_the_next_read_go_to_the_store(clock: FakeClock) -> None:
    rows = Rows(row("alice", "Alice"))
    cache = SubscriberCache(rows, ROLES, clock)
    await cache.get("alice")
    rows.rows["alice"] = row("alice", "Alice Renamed")
    cache.forget("alice")
    assert await cache.display_name("alice") == "Alice Renamed"
    assert rows.reads == ["alice", "alice"]
    cache.forget("nobody")  # never read: nothing to forget, no error
    await clock.advance(STALENESS)
    cache.forget("alice")  # expired: nothing to forget, no error


async def test_a_read_racing_a_change_is_answered_but_not_kept(clock: FakeClock) -> None:
    rows = Rows(row("alice", "Alice"))
    cache = SubscriberCache(rows, ROLES, clock)
    rows.gate = asyncio.Event()
    racing = asyncio.create_task(cache.display_name("alice"))
    await asyncio.sleep(0)
    assert rows.reads == ["alice"], "the read is under way"
    rows.rows["alice"] = row("alice", "Alice Renamed")
    cache.forget("alice")  # the change lands while the old row is on its way
    rows.gate.set()
    assert await racing == "Alice"
    assert await cache.display_name("alice") == "Alice Renamed", "the old row was not kept"


async def test_a_display_name_defaults_to_the_username(clock: FakeClock) -> None:
    cache = SubscriberCache(Rows(row("bob")), ROLES, clock)
    assert await cache.display_name("bob") == "bob"


async def test_the_cache_is_bounded_least_recently_read_first(clock: FakeClock) -> None:
    rows = Rows(row("alice"), row("bob"), row("carol"))
    cache = SubscriberCache(rows, ROLES, clock, max_size=2)
    await cache.get("alice")
    await cache.get("bob")
    await cache.get("alice")  # bob is now the least recently read
    await cache.get("carol")
    rows.reads.clear()
    await cache.get("alice")
    await cache.get("bob")
    assert rows.reads == ["bob"]


# --- Owned by the identity handler. --------------------------------------------


async def test_identity_evicts_every_change_it_makes(tmp_path: Path) -> None:
    clock = FakeClock()
    async with handler(tmp_path, clock) as identity:
        cache = identity.subscribers
        assert not await cache.exists("alice")
        await identity.create(identity_pb2.Subscriber(username="alice", password=PASSWORD, display_name="Alice"))
        assert await cache.display_name("alice") == "Alice", "created: seen at once"
        await identity.update(identity_pb2.Subscriber(username="alice", display_name="Alice L."), ["display_name"])
        assert await cache.display_name("alice") == "Alice L.", "renamed: seen at once"
        await identity.update(identity_pb2.Subscriber(username="alice", roles=["admin"]), ["roles"])
        known = await cache.get("alice")
        assert known is not None and "admin" in known.permissions, "new roles: seen at once"
        await identity.update(identity_pb2.Subscriber(username="alice", disabled=True), ["disabled"])
        known = await cache.get("alice")
        assert known is not None and known.row.disabled, "disabled: seen at once"
        await identity.delete_subscriber("alice")
        assert not await cache.exists("alice"), "deleted: seen at once"
        assert clock.monotonic() == 0.0, "all without time passing"


async def test_verification_reads_no_sql_within_the_bound_and_sees_another_process_after_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    async with handler(tmp_path, clock) as identity:
        await identity.create(identity_pb2.Subscriber(username="alice", password=PASSWORD))
        session = await identity.login("alice", PASSWORD, "laptop", "192.0.2.1")
        assert isinstance(await identity.verify_token(session.access_token), Verified)
        with statements() as sql:
            for _ in range(20):
                assert isinstance(await identity.verify_token(session.access_token), Verified)
        assert sql == []
        # Another process (the admin CLI, another core) disables her, and its
        # revocation of her sessions has not been polled yet.
        elsewhere = create_engine(support.test_config(tmp_path).database_url)
        try:
            store = IdentityStore(elsewhere)
            stored = await store.get_subscriber("alice")
            assert stored is not None
            await store.update_subscriber(replace(stored, disabled=True))
        finally:
            await dispose(elsewhere)
        await clock.advance(STALENESS - TICK)
        assert isinstance(await identity.verify_token(session.access_token), Verified)
        await clock.advance(TICK)
        assert await identity.verify_token(session.access_token) is Inactive.DISABLED
