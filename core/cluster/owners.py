"""Who owns the live calls: the bookkeeping around the calls' leases.

A call's owner is the node holding its lease, ``call:<id>`` (``leases.py``):
only that node runs the call's timers and applies its inputs. Beside the
leases each node keeps, here, what the others need to find and take over
its calls:

- its gRPC address, announced every heartbeat with a ttl: where the other
  nodes forward a call's inputs, and, once it lapses, the sign the node is
  gone;
- the set of calls it owns: when it is gone, the others look through that
  set (not through every call) and adopt the calls whose lease they get;
- orphans: calls whose owner lost their lease while alive (a pause, Redis
  unreachable), which any node may adopt;
- an inbox of inputs for its calls that arose on another node (a device
  lost where the registry told it).

``CallOwners`` is the interface; ``LocalCallOwners`` the embedded
implementation (one process's memory; ``peer`` gives another node on the
same table) and ``redis_owners.RedisCallOwners`` the cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class Orphan:
    """A live call with no owner: ``node`` is the gone node whose set still
    names it (None for a call whose lease lapsed under a live owner)."""

    call_id: str
    node: str | None


class CallOwners(Protocol):
    @property
    def node(self) -> str:
        """The id of this node (its leases' holder)."""
        ...

    async def restart(self) -> None:
        """Before this node claims any call: the calls its set names are a
        previous run's under the same node id, now orphans."""
        ...

    async def announce(self, address: str, ttl: float) -> None:
        """This node is alive and reached at ``address``, for ``ttl`` seconds."""
        ...

    async def leave(self) -> None:
        """This node stops (gracefully): the others take over its calls at
        their next heartbeat instead of after the ttl."""
        ...

    async def address(self, node: str) -> str | None:
        """Where ``node`` is reached; None once it is gone."""
        ...

    async def claim(self, call_id: str, previous: str | None = None) -> None:
        """This node owns the call (it holds the lease); ``previous`` is the
        gone node it takes the call over from."""
        ...

    async def disown(self, call_id: str, *, orphaned: bool = False) -> None:
        """This node no longer owns the call: it ended, or (``orphaned``) the
        lease was lost while the call is still live."""
        ...

    async def forget(self, orphan: Orphan) -> None:
        """The orphan is not one: it ended, or another node owns it now."""
        ...

    async def orphans(self) -> list[Orphan]:
        """The calls of gone nodes, and the calls orphaned by a live one."""
        ...

    async def send(self, node: str, call_id: str, device: str) -> None:
        """Tell the owner ``node`` that ``device`` of its call is lost."""
        ...

    async def inbox(self) -> list[tuple[str, str]]:
        """(call id, lost device) sent to this node since the last look."""
        ...


@dataclass(slots=True)
class _Table:
    addresses: dict[str, tuple[str, float]] = field(default_factory=dict)  # node -> (address, until)
    owned: dict[str, set[str]] = field(default_factory=dict)
    orphaned: set[str] = field(default_factory=set)
    inboxes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


class LocalCallOwners:
    """The embedded bookkeeping: one process's memory, time from ``clock``."""

    def __init__(self, node: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._node = node
        self._clock = clock
        self._table = _Table()

    def peer(self, node: str) -> LocalCallOwners:
        """Another node's view of the same table."""
        other = LocalCallOwners(node, self._clock)
        other._table = self._table
        return other

    @property
    def node(self) -> str:
        return self._node

    async def restart(self) -> None:
        self._table.orphaned |= self._table.owned.pop(self._node, set())

    async def announce(self, address: str, ttl: float) -> None:
        self._table.addresses[self._node] = (address, self._clock.monotonic() + ttl)

    async def leave(self) -> None:
        self._table.addresses.pop(self._node, None)

    async def address(self, node: str) -> str | None:
        entry = self._table.addresses.get(node)
        if entry is None or entry[1] <= self._clock.monotonic():
            return None
        return entry[0]

    async def claim(self, call_id: str, previous: str | None = None) -> None:
        if previous is not None:
            self._table.owned.get(previous, set()).discard(call_id)
        self._table.owned.setdefault(self._node, set()).add(call_id)
        self._table.orphaned.discard(call_id)

    async def disown(self, call_id: str, *, orphaned: bool = False) -> None:
        self._table.owned.get(self._node, set()).discard(call_id)
        if orphaned:
            self._table.orphaned.add(call_id)

    async def forget(self, orphan: Orphan) -> None:
        if orphan.node is None:
            self._table.orphaned.discard(orphan.call_id)
        else:
            self._table.owned.get(orphan.node, set()).discard(orphan.call_id)

    async def orphans(self) -> list[Orphan]:
        found = [Orphan(call_id, None) for call_id in self._table.orphaned]
        for node, calls in self._table.owned.items():
            if node != self._node and await self.address(node) is None:
                found += [Orphan(call_id, node) for call_id in calls]
        return found

    async def send(self, node: str, call_id: str, device: str) -> None:
        self._table.inboxes.setdefault(node, []).append((call_id, device))

    async def inbox(self) -> list[tuple[str, str]]:
        return self._table.inboxes.pop(self._node, [])
