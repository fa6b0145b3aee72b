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


class KeyedLimit:
    """At most ``limit`` holders per key, and ``queue`` more waiting their
    turn in order; beyond, Busy at once. Keys live only while in use."""

    def __init__(self, limit: int, queue: int, what: str, retry_after: float) -> None:
        self._limit = limit
        self._queue = queue
        self._what = what
        self._retry_after = retry_after
        self._keys: dict[object, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        semaphore, users = self._keys.get(key) or (asyncio.Semaphore(self._limit), 0)
        if users >= self._limit + self._queue:
            raise Busy(self._what, self._retry_after)
        self._keys[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._keys[key]
            if users <= 1:
                del self._keys[key]
            else:
                self._keys[key] = (semaphore, users - 1)


class PasswordChecks:
    """Admission of logins and the slots of their password checks.

    ``admit`` holds a login, from its arrival to its answer, against its
    (username, address) pair (one at a time: the same person gains nothing
    from two) and its client address (``per_address`` at a time), each with
    ``queue_per_address`` more waiting; beyond, it is refused at once. So
    one address never holds more than ``per_address`` of the ``total``
    check slots that ``slot`` hands out, a real user elsewhere finds one
    free, and up to ``queue`` logins wait for a slot before refusals start.
    ``running`` and ``peak`` count the checks in their slots.
    """

    def __init__(
        self, *, total: int, per_address: int, queue: int, queue_per_address: int, retry_after: float = 1.0
    ) -> None:
        self._pairs = KeyedLimit(
            1, queue_per_address, "a login for this username from this client address is in progress", retry_after
        )
        # Bounded by _admitted below, so its own queue never refuses.
        self._addresses = KeyedLimit(per_address, per_address + queue_per_address, "", retry_after)
        self._admitted: Counter[str] = Counter()
        self._admit_limit = per_address + queue_per_address
        self._queue = queue
        self._retry_after = retry_after
        self._slots = asyncio.Semaphore(total)
        self._waiting = 0
        self.running = 0
        self.peak = 0

    @asynccontextmanager
    async def admit(self, username: str, address: str) -> AsyncIterator[None]:
        # Everything an address has under way or waiting is counted first,
        # whatever the usernames, so that spraying names queues no more.
        if self._admitted[address] >= self._admit_limit:  # a missing key reads 0
            raise Busy("too many logins in progress from this client address", self._retry_after)
        self._admitted[address] += 1
        try:
            # The pair before the address: a second login of one person
            # waits without taking one of its address's places.
            async with self._pairs.hold((username, address)), self._addresses.hold(address):
                yield
        finally:
            self._admitted[address] -= 1
            if not self._admitted[address]:
                del self._admitted[address]

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


class KeyedLocks:
    """One asyncio.Lock per key (a session id, a throttle key), kept only
    while someone holds or waits for it: the map is bounded by the calls in
    flight."""

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
