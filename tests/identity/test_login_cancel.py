"""A login cancelled while its throttle reservation is being written (the
client gave up) leaves nothing counted: the unit of work goes on in the
database's writer and commits, and what it counted is taken back before
the login gives up its place (its address's slot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from core.db.engine import create_engine
from core.db.work import dispose
from core.identity import rules
from core.identity import tables as t
from core.identity.limits import PasswordChecks
from core.identity.logins import Logins
from core.identity.passwords import Argon2Cost, Passwords
from core.identity.store import IdentityStore, ThrottleChange
from settings.config import sqlite_url
from tests.support.clock import FakeClock

POLICY = rules.ThrottlePolicy(after=3, delay=1.0, lock_after=10)


class SlowStore(IdentityStore):
    """Holds each throttle unit until ``release`` is set, as a busy writer does."""

    release: asyncio.Event
    started: asyncio.Event

    async def change_throttle_states(
        self, changes: Sequence[tuple[str, ThrottleChange | None]], **kwargs: object
    ) -> list[tuple[rules.ThrottleState | None, rules.ThrottleState | None]]:
        self.started.set()
        await self.release.wait()
        return await super().change_throttle_states(changes, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SlowStore]:
    engine = create_engine(sqlite_url(tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(t.login_failures.create)
        await conn.run_sync(t.subscribers.create)
    store = SlowStore(engine)
    store.release, store.started = asyncio.Event(), asyncio.Event()
    try:
        yield store
    finally:
        await dispose(engine)


def logins(store: IdentityStore) -> Logins:
    checks = PasswordChecks(total=4, per_address=2, queue=64, queue_per_address=64)
    return Logins(
        store,
        FakeClock(),
        throttle=POLICY,
        checks=checks,
        username_max_delay=0.0,
        passwords=Passwords(Argon2Cost(time_cost=1, memory_kib=64, parallelism=1)),
    )


async def test_a_login_cancelled_mid_reservation_leaves_nothing_counted(store: SlowStore) -> None:
    login = asyncio.ensure_future(logins(store).check("alice", "secret", "192.0.2.7"))
    await store.started.wait()
    login.cancel()
    await asyncio.sleep(0.05)
    assert not login.done(), "the cancelled login keeps its place until its count is taken back"
    store.release.set()  # the reservation commits after its login was cancelled
    with pytest.raises(asyncio.CancelledError):
        await login
    for key in ("pair:192.0.2.7|alice", "addr:192.0.2.7", "user:alice"):
        state = await store.throttle_state(key)
        assert state is None or state.failures == 0, key
