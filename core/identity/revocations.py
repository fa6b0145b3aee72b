"""Which sessions and API keys may still be used, known to every core within
a second, with no database query per verification.

Each core keeps in memory the sessions that were issued and not revoked,
the sessions that were revoked, and the API keys that were revoked or
rotated. Its own changes are added at once; a poll every ``interval``
seconds reads what other cores (and the admin CLI) did (a few indexed
queries per poll, not per call). Entries are forgotten once no token of
theirs can still be unexpired.

A token whose session this core has not heard of costs one lookup, rate
limited and remembered (bounded): it is a session another core created
since the last poll, or a token minted outside wac with a stolen key.
Beyond the lookup budget such a token waits for a poll started for it (at
most one in flight, at most every MIN_POLL_GAP seconds), which brings every
session created elsewhere meanwhile in one query: a burst of logins on
another core of a cluster is let in a moment later, never refused, and a
flood of forgeries costs a few queries a second, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import FIFOCache

from core import failures
from core.clock import SYSTEM_CLOCK, Clock
from core.identity.store import IdentityStore

log = logging.getLogger("wac.identity")

# Lookups of unknown session ids: a burst, refilled at a rate per second.
# Legitimate ones are rare (a login on another core less than a poll ago);
# beyond the budget an unknown session is refused without a query.
LOOKUP_BURST = 20
LOOKUP_RATE = 10.0
# Seconds between two polls started for unknown sessions beyond the budget.
MIN_POLL_GAP = 0.2
# Seconds each poll reaches back before the previous one started: longer
# than a session's insert takes to commit after its create_time (a login
# burst queues inserts for a pool connection), else that session would be
# missed by every poll and its tokens refused as revoked.
POLL_OVERLAP = 5.0
# Session ids found not to exist, remembered (the oldest forgotten first)
# so that a replayed forged token costs no further lookup.
MAX_UNKNOWN = 10_000
# A revoked or rotated API key stays listed this long after its end, so
# that a key cached before the end is refused whatever the cache's age.
KEY_END_KEEP = 300.0
# Seconds between two sweeps of what can no longer matter (sessions whose
# tokens have all expired, old revocations and key ends). A sweep walks every
# live session: once per poll, 5,000 sessions cost a login burst 7% of the
# core. Entries past their time are ignored by every check meanwhile.
SWEEP_INTERVAL = 10.0


# Revocation reasons that end every session of a subscriber at once
# (RevokeSessions, disabling, deleting, a new password), as opposed to one
# session's own end ("logout", "refresh_token_reused").
EVERY_SESSION_REASONS = frozenset({"revoked", "disabled", "deleted", "password_changed"})


@dataclass(frozen=True, slots=True)
class SessionsRevoked:
    """Sessions of one subscriber whose tokens stopped verifying, for what
    holds state on their behalf outside the core (a gateway's registrations)."""

    username: str
    # The sessions ended: several at once when made by this core, one per
    # event when learnt from the poll; none when a whole-subscriber
    # revocation found no open session.
    session_ids: tuple[str, ...]
    # "revoked", "disabled", "deleted", "password_changed", "logout",
    # "refresh_token_reused".
    reason: str
    # Made by another core or the admin CLI, learnt from the poll (within
    # [identity] revocation_poll seconds) rather than made by this core.
    elsewhere: bool = False

    @property
    def every_session(self) -> bool:
        """Every session of the subscriber ended: whatever it holds anywhere
        ends too, whichever session it came from."""
        return self.reason in EVERY_SESSION_REASONS


SessionsRevokedListener = Callable[[SessionsRevoked], Awaitable[None]]


class RevocationCache:
    def __init__(
        self,
        store: IdentityStore,
        *,
        interval: float,
        keep_for: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._interval = interval
        self._keep_for = keep_for
        self._clock = clock
        self._revoked: dict[str, tuple[str, float]] = {}
        # Session id -> until when a token of it may be valid (its refresh
        # token's expiry plus a token lifetime).
        self._live: dict[str, float] = {}
        self._unknown: FIFOCache[str, None] = FIFOCache(maxsize=MAX_UNKNOWN)
        self._lookups: dict[str, asyncio.Future[bool]] = {}
        self._budget = float(LOOKUP_BURST)
        self._budget_time = clock.time()
        # API key id -> when it stops (stopped) working.
        self._key_ends: dict[str, float] = {}
        self._since = 0.0
        # When the last finished poll started; one poll at a time, and the
        # one started for unknown sessions beyond the budget.
        self._polled_from = float("-inf")
        self._swept_at = float("-inf")
        self._polling = asyncio.Lock()
        self._demanded: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str, str, str], Awaitable[None]]] = []

    def on_revoked_elsewhere(self, listener: Callable[[str, str, str], Awaitable[None]]) -> None:
        """Call ``listener(username, session_id, reason)`` for each revocation
        first seen by polling, i.e. made by another core or the admin CLI."""
        self._listeners.append(listener)

    # -- sessions -----------------------------------------------------
    def reason(self, session_id: str) -> str | None:
        entry = self._revoked.get(session_id)
        return entry[0] if entry else None

    def add(self, session_id: str, reason: str, when: float) -> None:
        self._revoked[session_id] = (reason, when)
        self._live.pop(session_id, None)

    def issued(self, session_id: str, until: float) -> None:
        """A session exists whose tokens may be valid until ``until``."""
        if session_id not in self._revoked:
            self._live[session_id] = max(until, self._live.get(session_id, 0.0))
            self._unknown.pop(session_id, None)

    async def is_issued(self, session_id: str) -> bool:
        """Was this session issued by wac and not revoked? From memory, or
        one rate-limited lookup for a session not heard of yet."""
        until = self._live.get(session_id)
        if until is not None and until > self._clock.time():
            return True
        if session_id in self._unknown or session_id in self._revoked:
            return False
        pending = self._lookups.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        if not self._spend():
            return await self._issued_after_a_poll(session_id)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._lookups[session_id] = future
        try:
            found = await self._look_up(session_id)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._lookups[session_id]

    async def _look_up(self, session_id: str) -> bool:
        row = await self._store.get_session(session_id)
        now = self._clock.time()
        if row is not None and row.revoke_time is not None:
            self.add(session_id, row.revoke_reason or "revoked", row.revoke_time)
            return False
        if row is not None and row.refresh_expire_time + self._keep_for > now:
            self.issued(session_id, row.refresh_expire_time + self._keep_for)
            return True
        self._unknown[session_id] = None
        return False

    async def _issued_after_a_poll(self, session_id: str) -> bool:
        """Whether a poll started from now on learns of the session."""
        asked = self._clock.time()
        # Twice at most: a poll already running may have started before asked.
        for _ in range(2):
            if self._polled_from >= asked:
                break
            if self._demanded is None or self._demanded.done():
                self._demanded = asyncio.create_task(self._demanded_poll(), name="revocations-poll-demanded")
            try:
                await asyncio.shield(self._demanded)
            except Exception as exc:
                # Not known to be revoked: the client retries, rather than
                # being told to log in again.
                log.warning("revocation poll for an unknown session failed: %s", exc)
                raise failures.Unavailable("the session cannot be checked right now; retry shortly") from exc
        until = self._live.get(session_id)
        return until is not None and until > self._clock.time()

    async def _demanded_poll(self) -> None:
        wait = self._polled_from + MIN_POLL_GAP - self._clock.time()
        if wait > 0:
            await self._clock.sleep(wait)
        await self.poll()

    def _spend(self) -> bool:
        now = self._clock.time()
        self._budget = min(float(LOOKUP_BURST), self._budget + (now - self._budget_time) * LOOKUP_RATE)
        self._budget_time = now
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True

    # -- API keys -----------------------------------------------------
    def key_end(self, key_id: str) -> float | None:
        """When the API key stops (stopped) working, if that is known."""
        return self._key_ends.get(key_id)

    def key_ends(self, key_id: str, when: float) -> None:
        current = self._key_ends.get(key_id)
        self._key_ends[key_id] = when if current is None else min(current, when)

    # -- loading and polling ------------------------------------------
    async def load(self) -> None:
        """Read every revocation whose tokens may still be unexpired, the
        sessions that may still mint tokens, and the API keys' ends."""
        now = self._clock.time()
        for session_id, _, reason, when in await self._store.revoked_since(now - self._keep_for):
            self._revoked[session_id] = (reason, when)
        for session_id, refresh_expire in await self._store.live_sessions(now - self._keep_for):
            self.issued(session_id, refresh_expire + self._keep_for)
        for key_id, end in await self._store.api_key_ends_since(now - KEY_END_KEEP):
            self.key_ends(key_id, end)
        self._since = now

    async def poll(self) -> None:
        async with self._polling:
            await self._poll()

    async def _poll(self) -> None:
        # Overlap the window: a change committed by another core with a
        # slightly earlier timestamp must not slip between polls.
        since = self._since - POLL_OVERLAP
        started = self._clock.time()
        for session_id, refresh_expire in await self._store.sessions_created_since(since):
            self.issued(session_id, refresh_expire + self._keep_for)
        for session_id, username, reason, when in await self._store.revoked_since(since):
            if session_id not in self._revoked:
                self.add(session_id, reason, when)
                for listener in self._listeners:
                    await listener(username, session_id, reason)
        for key_id, end in await self._store.api_key_ends_since(since):
            self.key_ends(key_id, end)
        self._since = started
        if started - self._swept_at >= SWEEP_INTERVAL:
            self._sweep(started)
        self._polled_from = started

    def _sweep(self, now: float) -> None:
        horizon = now - self._keep_for
        for session_id, (_, when) in tuple(self._revoked.items()):
            if when < horizon:
                del self._revoked[session_id]
        for session_id, until in tuple(self._live.items()):
            if until < now:
                del self._live[session_id]
        for key_id, end in tuple(self._key_ends.items()):
            if end < now - KEY_END_KEEP:
                del self._key_ends[key_id]
        self._swept_at = now

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            try:
                await self.poll()
            except Exception:
                log.exception("revocation poll failed; retrying")
