"""The in-memory sessions and API-key ends, against a fake store and clock:
what other cores did arrives by the poll; unknown sessions cost bounded,
rate-limited lookups; nothing is kept past its use."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from core import failures
from core.identity import revocations
from core.identity.revocations import RevocationCache
from core.identity.store import SessionRow
from tests.support.clock import FakeClock


class FakeStore:
    """The store's queries the cache uses, over plain lists."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRow] = {}
        self.key_ends: dict[str, float] = {}
        self.lookups = 0
        self.polls = 0
        self.failing = False

    def add_session(self, session_id: str, now: float, refresh_expire: float) -> None:
        self.sessions[session_id] = SessionRow(session_id, "alice", "", now, 0, "", refresh_expire, None, None)

    async def revoked_since(self, since: float) -> list[tuple[str, str, str, float]]:
        return [
            (s.session_id, s.username, s.revoke_reason or "revoked", s.revoke_time)
            for s in self.sessions.values()
            if s.revoke_time is not None and s.revoke_time >= since
        ]

    async def live_sessions(self, after: float) -> list[tuple[str, float]]:
        return [
            (s.session_id, s.refresh_expire_time)
            for s in self.sessions.values()
            if s.revoke_time is None and s.refresh_expire_time > after
        ]

    async def sessions_created_since(self, since: float) -> list[tuple[str, float]]:
        self.polls += 1
        if self.failing:
            raise ConnectionError("the database is down")
        return [
            (s.session_id, s.refresh_expire_time)
            for s in self.sessions.values()
            if s.create_time >= since and s.revoke_time is None
        ]

    async def get_session(self, session_id: str) -> SessionRow | None:
        self.lookups += 1
        return self.sessions.get(session_id)

    async def api_key_ends_since(self, since: float) -> list[tuple[str, float]]:
        return [(key_id, end) for key_id, end in self.key_ends.items() if end >= since]


def cache(store: FakeStore, clock: FakeClock) -> RevocationCache:
    fake: Any = store
    return RevocationCache(fake, interval=0.5, keep_for=960.0, clock=clock)


async def test_sessions_of_other_cores_arrive_by_the_poll_without_lookups() -> None:
    store, clock = FakeStore(), FakeClock()
    store.add_session("old", clock.time() - 100, clock.time() + 3600)
    sessions = cache(store, clock)
    await sessions.load()
    assert await sessions.is_issued("old")
    await clock.advance(0.5)
    store.add_session("new", clock.time(), clock.time() + 3600)  # another core's login
    await sessions.poll()
    assert await sessions.is_issued("new")
    assert store.lookups == 0


async def test_a_session_revoked_elsewhere_is_no_longer_issued() -> None:
    store, clock = FakeStore(), FakeClock()
    store.add_session("s", clock.time(), clock.time() + 3600)
    sessions = cache(store, clock)
    await sessions.load()
    await clock.advance(0.5)
    store.sessions["s"] = replace(store.sessions["s"], revoke_time=clock.time(), revoke_reason="logout")
    await sessions.poll()
    assert sessions.reason("s") == "logout"
    assert not await sessions.is_issued("s")


async def test_unknown_sessions_are_looked_up_within_a_budget_and_remembered() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    answers = [await sessions.is_issued(f"forged-{n}") for n in range(revocations.LOOKUP_BURST)]
    # Beyond the budget: no lookup, but one poll for them all, MIN_POLL_GAP
    # after the last.
    polls = store.polls
    beyond = [asyncio.create_task(sessions.is_issued(f"forged-{n}")) for n in range(20, 30)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in beyond)
    await clock.advance(revocations.MIN_POLL_GAP)
    answers += await asyncio.gather(*beyond)
    assert not any(answers)
    assert store.lookups == revocations.LOOKUP_BURST  # the rest refused without a lookup
    assert store.polls == polls + 1
    assert not await sessions.is_issued("forged-0")  # remembered
    assert store.lookups == revocations.LOOKUP_BURST
    await clock.advance(1.0)  # the budget refills
    store.add_session("elsewhere", clock.time(), clock.time() + 3600)
    assert await sessions.is_issued("elsewhere")
    assert await sessions.is_issued("elsewhere")
    assert store.lookups == revocations.LOOKUP_BURST + 1


async def test_a_burst_of_logins_elsewhere_beyond_the_budget_is_let_in_by_the_next_poll() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    # Another core of the cluster logs many in at once, between two polls.
    burst = [f"login-{n}" for n in range(revocations.LOOKUP_BURST * 3)]
    for session_id in burst:
        store.add_session(session_id, clock.time(), clock.time() + 3600)
    asked = [asyncio.create_task(sessions.is_issued(session_id)) for session_id in burst]
    await asyncio.sleep(0)
    await clock.advance(revocations.MIN_POLL_GAP)
    assert all(await asyncio.gather(*asked))
    assert store.lookups == revocations.LOOKUP_BURST


async def test_a_login_committed_seconds_after_its_create_time_is_still_polled() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    created = clock.time()
    await clock.advance(1.5)
    await sessions.poll()  # the insert has not committed yet: not seen
    await clock.advance(1.5)
    # Committed now, 3 s after its create_time (it queued behind a login burst).
    store.add_session("late", created, created + 3600)
    await sessions.poll()
    lookups = store.lookups
    assert await sessions.is_issued("late")
    assert store.lookups == lookups, "known from the poll, not looked up"


async def test_a_failed_poll_answers_unavailable_for_the_unknown_session_rather_than_hang() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    for n in range(revocations.LOOKUP_BURST):
        await sessions.is_issued(f"forged-{n}")
    store.failing = True
    waiting = asyncio.create_task(sessions.is_issued("beyond"))
    await clock.advance(revocations.MIN_POLL_GAP)
    # Not "revoked; log in again": the session may well be good, so the
    # client is told to retry.
    with pytest.raises(failures.Unavailable, match="retry"):
        await waiting
    store.failing = False
    store.add_session("beyond", clock.time(), clock.time() + 3600)
    retried = asyncio.create_task(sessions.is_issued("beyond"))
    await clock.advance(revocations.MIN_POLL_GAP)
    assert await retried is True


async def test_sessions_whose_tokens_cannot_be_valid_are_forgotten() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    sessions.issued("s", clock.time() + 10)
    await clock.advance(11)
    await sessions.poll()
    assert "s" not in sessions._live


async def test_expired_entries_are_swept_once_per_interval_not_per_poll() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    await sessions.poll()  # the first poll sweeps
    sessions.issued("s", clock.time() + 1)
    await clock.advance(2)
    await sessions.poll()
    # Still listed (a sweep walks every live session: not at every poll),
    # yet no longer issued: its tokens cannot be valid any more.
    assert "s" in sessions._live
    assert await sessions.is_issued("s") is False
    await clock.advance(revocations.SWEEP_INTERVAL)
    await sessions.poll()
    assert "s" not in sessions._live


async def test_api_key_ends_arrive_by_the_poll_and_are_forgotten_later() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    await clock.advance(0.5)
    store.key_ends["k1"] = clock.time()  # revoked by the admin CLI
    store.key_ends["k2"] = clock.time() + 60  # rotated, in its grace
    await sessions.poll()
    assert sessions.key_end("k1") == clock.time() and sessions.key_end("k2") == clock.time() + 60
    sessions.key_ends("k2", clock.time())  # revoked during its grace: the earlier end wins
    assert sessions.key_end("k2") == clock.time()
    del store.key_ends["k1"], store.key_ends["k2"]
    await clock.advance(revocations.KEY_END_KEEP + 1)
    await sessions.poll()
    assert sessions.key_end("k1") is None


async def test_the_poll_runs_every_interval_on_the_clock() -> None:
    store, clock = FakeStore(), FakeClock()
    sessions = cache(store, clock)
    await sessions.load()
    polling = asyncio.create_task(sessions.run())
    try:
        store.add_session("new", clock.time(), clock.time() + 3600)  # another core's login
        await clock.advance(0.4)
        assert "new" not in sessions._live  # not polled yet
        await clock.advance(0.1)
        assert "new" in sessions._live
        assert store.lookups == 0
    finally:
        polling.cancel()
