"""In-process bounds for identity work: how many password checks run at
once, and one refresh at a time per session.

argon2 costs 64 MiB and tens of milliseconds of CPU per check, in a thread:
without a cap, a flood of logins from one address grows the core by
hundreds of MiB and makes a real user wait seconds. These bounds hold per
core process; the throttle in the database holds across cores.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Busy(Exception):
    """The bound is reached: refuse now (RESOURCE_EXHAUSTED), retry later."""

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class PasswordChecks:
    """Admission of logins and the slots of their password checks.

    ``admit`` counts a login from its arrival to its answer against its
    client address (at most ``per_address``) and its (username, address)
    pair (at most one: the same person has no use for two at once), and
    refuses beyond at once, so one address can neither queue work nor fill
    the slots. ``slot`` then holds one of ``total`` check slots; up to
    ``queue`` logins wait for one, beyond which they are refused.
    ``running`` and ``peak`` count the checks in their slots.
    """

    def __init__(self, *, total: int, per_address: int, queue: int, retry_after: float = 1.0) -> None:
        self._per_address = per_address
        self._queue = queue
        self._retry_after = retry_after
        self._slots = asyncio.Semaphore(total)
        self._waiting = 0
        self._by_address: Counter[str] = Counter()
        self._by_pair: Counter[tuple[str, str]] = Counter()
        self.running = 0
        self.peak = 0

    @asynccontextmanager
    async def admit(self, username: str, address: str) -> AsyncIterator[None]:
        pair = (username, address)
        # A Counter's missing key reads as 0 without being stored.
        if self._by_pair[pair] >= 1:
            raise Busy("a login for this username from this client address is in progress", self._retry_after)
        if self._by_address[address] >= self._per_address:
            raise Busy("too many logins in progress from this client address", self._retry_after)
        self._by_pair[pair] += 1
        self._by_address[address] += 1
        try:
            yield
        finally:
            # Counters drop their zero entries: the maps hold only logins in flight.
            self._by_pair[pair] -= 1
            if not self._by_pair[pair]:
                del self._by_pair[pair]
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self._waiting >= self._queue:
                raise Busy("too many logins in progress", self._retry_after)
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


class SessionLocks:
    """One asyncio.Lock per key (a session id), kept only while someone holds
    or waits for it: the map is bounded by the calls in flight."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
