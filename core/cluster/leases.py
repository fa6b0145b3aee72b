"""Leases: which node owns a name (a live call, a presence subject, a
connector's run), for a while, so that its work runs on exactly one node.

A lease lasts ``ttl`` seconds unless its holder renews it; a node that dies
or is cut off stops renewing, and once the lease has lapsed another node can
take the name. Each holding carries a fencing token, a number that grows
every time the name changes hands: a node acting on a name passes its token
along, and whatever sees a token lower than one it has seen knows the sender
lost the lease meanwhile.

``Leases`` is the interface; ``LocalLeases`` the embedded implementation (one
process, memory, the injected clock) and ``redis_leases.RedisLeases`` the
cluster's. ``Keeper`` holds a node's leases with either: it renews them every
heartbeat and says when one is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.loops import end_if_stopping, stopping

log = logging.getLogger("wac.cluster.leases")


@dataclass(frozen=True, slots=True)
class Lease:
    """One holding of ``name`` by ``node``, for ``ttl`` seconds at a time."""

    name: str
    node: str
    # The fencing token: larger for each new holding of the name, so two
    # holdings of one name, even by one node, are never equal.
    token: int
    ttl: float


class Leases(Protocol):
    """Named leases, as seen by one node (``node``)."""

    @property
    def node(self) -> str:
        """The id of the node this instance acquires for."""
        ...

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds if no node holds it (this one
        included); None if one does."""
        ...

    async def renew(self, lease: Lease) -> bool:
        """Make ``lease`` last its ttl again from now. False if it is no
        longer held (it lapsed, whoever holds the name now): the node must
        stop acting on it."""
        ...

    async def renew_many(self, leases: Sequence[Lease]) -> list[bool]:
        """``renew`` for each of ``leases``, in as few round trips as the
        store allows (a node's heartbeat renews all it holds): the answers
        in the same order."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up, so that another node may take the name at once.
        A holding that lapsed is left alone, even if this node holds the name
        again under a newer token."""
        ...

    async def owner(self, name: str) -> str | None:
        """The node holding ``name``, or None."""
        ...


def checked_ttl(ttl: float) -> float:
    """``ttl`` if a lease can last it (Redis counts in whole milliseconds)."""
    if not ttl >= 0.001:
        raise ValueError(f"a lease lasts at least 1 ms, not {ttl!r} s")
    return ttl


@dataclass(slots=True)
class _Holding:
    lease: Lease
    expires: float  # on the clock's monotonic time


class _Table:
    """The holdings of every node of one process, and the token counter."""

    def __init__(self) -> None:
        self.holdings: dict[str, _Holding] = {}
        self.tokens = itertools.count(1)
        # Lapsed holdings are dropped when their name is next used, and all
        # at once when the table has doubled since the last sweep: a name
        # never used again does not stay forever.
        self.sweep_at = _FIRST_SWEEP


_FIRST_SWEEP = 1024


class LocalLeases:
    """The embedded leases: one process's memory, time from ``clock``.

    ``peer`` gives another node on the same table, as two cores on one Redis
    are: what the scenario tests shared with ``RedisLeases`` need.
    """

    def __init__(self, node: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._node = node
        self._clock = clock
        self._table = _Table()

    @property
    def node(self) -> str:
        return self._node

    def peer(self, node: str) -> LocalLeases:
        """Another node's view of the same leases."""
        other = LocalLeases(node, self._clock)
        other._table = self._table
        return other

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        checked_ttl(ttl)
        self._sweep()
        if self._current(name) is not None:
            return None
        lease = Lease(name, self._node, next(self._table.tokens), ttl)
        self._table.holdings[name] = _Holding(lease, self._clock.monotonic() + ttl)
        return lease

    async def renew(self, lease: Lease) -> bool:
        holding = self._current(lease.name)
        if holding is None or holding.lease != lease:
            return False
        holding.expires = self._clock.monotonic() + lease.ttl
        return True

    async def renew_many(self, leases: Sequence[Lease]) -> list[bool]:
        return [await self.renew(lease) for lease in leases]

    async def release(self, lease: Lease) -> None:
        holding = self._current(lease.name)
        if holding is not None and holding.lease == lease:
            del self._table.holdings[lease.name]

    async def owner(self, name: str) -> str | None:
        holding = self._current(name)
        return None if holding is None else holding.lease.node

    def _current(self, name: str) -> _Holding | None:
        """The holding of ``name`` unless it has lapsed (then it is dropped)."""
        holding = self._table.holdings.get(name)
        if holding is not None and holding.expires <= self._clock.monotonic():
            del self._table.holdings[name]
            return None
        return holding

    def _sweep(self) -> None:
        table = self._table
        if len(table.holdings) < table.sweep_at:
            return
        now = self._clock.monotonic()
        table.holdings = {name: h for name, h in table.holdings.items() if h.expires > now}
        table.sweep_at = max(_FIRST_SWEEP, 2 * len(table.holdings))


LostListener = Callable[[Lease], None]


@dataclass(slots=True)
class _Kept:
    lease: Lease
    # When the last renewal that succeeded was sent (the clock's monotonic):
    # the lease is surely held until then + ttl (the store started counting
    # later), and maybe not after.
    renewed: float


class Keeper:
    """Holds this node's leases: renews each every ``heartbeat`` seconds on
    ``clock``, and calls ``on_lost(lease)`` once for a lease it lost.

    A lease is lost when a renewal answers that it is no longer held, or
    when renewals have failed (the store unreachable) for so long that it
    may lapse before the next heartbeat: its work stops before another node
    could take it over. A lost lease is no longer kept. ``heartbeat`` should
    be under half the ttl (``[cluster]`` checks it), so that one late
    renewal still arrives in time.
    """

    def __init__(self, leases: Leases, heartbeat: float, on_lost: LostListener, clock: Clock = SYSTEM_CLOCK) -> None:
        if not heartbeat > 0:
            raise ValueError(f"a heartbeat lasts more than 0 s, not {heartbeat!r}")
        self._leases = leases
        self._heartbeat = heartbeat
        self._on_lost = on_lost
        self._clock = clock
        self._kept: dict[str, _Kept] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start renewing (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wac-lease-keeper")

    async def close(self) -> None:
        """Stop renewing and release every lease kept, so that other nodes
        take them over at once rather than after their ttl."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        kept, self._kept = self._kept, {}
        for entry in kept.values():
            try:
                await self._leases.release(entry.lease)
            except Exception:  # the store is unreachable: the lease lapses instead
                log.warning("could not release lease %s; it lapses after %g s", entry.lease.name, entry.lease.ttl)

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """Acquire ``name`` and keep it; None if another holding exists."""
        sent = self._clock.monotonic()
        lease = await self._leases.acquire(name, ttl)
        if lease is not None:
            self._kept[name] = _Kept(lease, sent)
        return lease

    def held(self, name: str) -> Lease | None:
        """The lease kept for ``name``, if any."""
        entry = self._kept.get(name)
        return None if entry is None else entry.lease

    async def release(self, name: str) -> None:
        """Stop keeping ``name`` and give its lease up."""
        entry = self._kept.pop(name, None)
        if entry is not None:
            await self._leases.release(entry.lease)

    async def _run(self) -> None:
        while True:
            end_if_stopping()
            await self._clock.sleep(self._heartbeat)
            await self._renew_all()

    async def _renew_all(self) -> None:
        """One heartbeat: renew every lease kept, all in one request."""
        entries = list(self._kept.items())
        if not entries:
            return
        sent = self._clock.monotonic()
        answers: list[bool | None]
        try:
            answers = list(await self._leases.renew_many([entry.lease for _name, entry in entries]))
        except Exception as exc:  # unknown: counted held while their ttl allows
            if stopping():
                raise  # a cancelled renewal that redis-py reported as its own error
            answers = [None] * len(entries)
            log.warning("%d lease renewal(s) failed (%r); retrying in %g s", len(entries), exc, self._heartbeat)
        now = self._clock.monotonic()
        for (name, entry), held in zip(entries, answers, strict=True):
            if self._kept.get(name) is not entry:
                continue  # released (or replaced) while it was being renewed
            if held:
                entry.renewed = sent
            elif held is False or now - entry.renewed >= entry.lease.ttl - self._heartbeat:
                del self._kept[name]
                self._lost(entry.lease)

    def _lost(self, lease: Lease) -> None:
        try:
            self._on_lost(lease)
        except Exception:
            log.exception("on_lost for lease %s failed", lease.name)
