"""Revoked sessions, known to every core within a second, with no database
query per verification.

Each core keeps the set in memory: its own revocations are added at once,
and a poll every ``interval`` seconds reads the revocations made by other
cores (one indexed query per poll, not per call). Entries are forgotten once
no token of theirs can still be unexpired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from core.identity.store import IdentityStore

log = logging.getLogger("wac.identity")


class RevocationCache:
    def __init__(
        self,
        store: IdentityStore,
        *,
        interval: float,
        keep_for: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._interval = interval
        self._keep_for = keep_for
        self._clock = clock
        self._revoked: dict[str, tuple[str, float]] = {}
        self._since = 0.0
        self._listeners: list[Callable[[str, str, str], Awaitable[None]]] = []

    def on_revoked_elsewhere(self, listener: Callable[[str, str, str], Awaitable[None]]) -> None:
        """Call ``listener(username, session_id, reason)`` for each revocation
        first seen by polling, i.e. made by another core or the admin CLI."""
        self._listeners.append(listener)

    def reason(self, session_id: str) -> str | None:
        entry = self._revoked.get(session_id)
        return entry[0] if entry else None

    def add(self, session_id: str, reason: str, when: float) -> None:
        self._revoked[session_id] = (reason, when)

    async def load(self) -> None:
        """Read every revocation whose tokens may still be unexpired."""
        now = self._clock()
        for session_id, _, reason, when in await self._store.revoked_since(now - self._keep_for):
            self._revoked[session_id] = (reason, when)
        self._since = now

    async def poll(self) -> None:
        # Overlap the window by a second: a revocation committed by another
        # core with a slightly earlier timestamp must not slip between polls.
        since = self._since - 1.0
        started = self._clock()
        for session_id, username, reason, when in await self._store.revoked_since(since):
            if session_id not in self._revoked:
                self._revoked[session_id] = (reason, when)
                for listener in self._listeners:
                    await listener(username, session_id, reason)
        self._since = started
        horizon = started - self._keep_for
        for session_id, (_, when) in tuple(self._revoked.items()):
            if when < horizon:
                del self._revoked[session_id]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception:
                log.exception("revocation poll failed; retrying")
