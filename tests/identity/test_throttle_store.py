"""The login throttle's state under concurrency, on SQLite and PostgreSQL:
two stores on one database stand for two cores sharing it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.identity import rules
from core.identity import tables as t
from core.identity.store import IdentityStore
from tests.support.sql import two_cores

POLICY = rules.ThrottlePolicy(after=1000, lock_after=1000)


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[IdentityStore, IdentityStore]]:
    async with two_cores(request, tmp_path, t.login_failures) as (one, other):
        yield IdentityStore(one), IdentityStore(other)


async def test_concurrent_failures_on_two_cores_are_all_counted(stores: tuple[IdentityStore, IdentityStore]) -> None:
    async def fail(store: IdentityStore) -> None:
        await store.change_throttle_state("user:alice", lambda s: rules.record_failure(s, POLICY, 100.0))

    # 29 at once, the row created by whichever comes first on either "core".
    await asyncio.gather(*(fail(stores[i % 2]) for i in range(29)))
    state = await stores[0].throttle_state("user:alice")
    assert state is not None and state.failures == 29


async def test_a_reservation_that_must_wait_writes_nothing(stores: tuple[IdentityStore, IdentityStore]) -> None:
    policy = rules.ThrottlePolicy(after=2, delay=30.0, lock_after=10)
    results = await asyncio.gather(
        *(
            stores[i % 2].change_throttle_state("addr:192.0.2.1", lambda s: rules.reserve(s, policy, 100.0))
            for i in range(12)
        )
    )
    # Exactly `after` attempts were reserved; the others saw them and wait.
    assert sum(before != after for before, after in results) == 2
    state = await stores[1].throttle_state("addr:192.0.2.1")
    assert state is not None and state.failures == 2
    assert rules.throttle_wait(state, policy, 100.0) == 30.0


async def test_forgiving_takes_back_one_failure(stores: tuple[IdentityStore, IdentityStore]) -> None:
    for _ in range(3):
        await stores[0].change_throttle_state("user:bob", lambda s: rules.record_failure(s, POLICY, 5.0))
    await asyncio.gather(
        *(stores[i % 2].change_throttle_state("user:bob", lambda s: rules.forgive(s, POLICY)) for i in range(2))
    )
    state = await stores[0].throttle_state("user:bob")
    assert state is not None and state.failures == 1


async def test_rows_whose_window_is_over_are_purged(stores: tuple[IdentityStore, IdentityStore]) -> None:
    await stores[0].change_throttle_state("addr:old", lambda s: rules.record_failure(s, POLICY, 10.0))
    await stores[0].change_throttle_state("addr:new", lambda s: rules.record_failure(s, POLICY, 500.0))
    assert await stores[1].purge_throttle(before=100.0, now=600.0) == 1
    assert await stores[0].throttle_state("addr:old") is None
    assert await stores[0].throttle_state("addr:new") is not None


async def test_a_row_still_locked_outlives_its_window(stores: tuple[IdentityStore, IdentityStore]) -> None:
    locked = rules.ThrottleState(failures=10, first_time=10.0, last_time=20.0, locked_until=2000.0)
    await stores[0].change_throttle_state("pair:bob@10.0.0.9", lambda s: locked)
    assert await stores[1].purge_throttle(before=1000.0, now=1500.0) == 0
    assert await stores[1].purge_throttle(before=1000.0, now=2001.0) == 1
