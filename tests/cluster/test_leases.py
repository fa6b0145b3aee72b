"""Leases and the Keeper: the same scenarios on the embedded ``LocalLeases``
(fake time) and on ``RedisLeases`` (a real Redis, where time is Redis's: short
real TTLs, and waits a little past them).

Two nodes, a and b, share one store. Each scenario moves time with the
harness: ``pause`` lets the store's time pass while the nodes do nothing (a
stalled or dead node: its keeper does not beat), ``run_for`` lets time pass
for the nodes' keepers too (a heartbeat at a time).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

import pytest

from core.cluster import redis_client
from core.cluster.leases import Keeper, Lease, Leases, LocalLeases
from core.cluster.redis_leases import RedisLeases
from tests.support.clock import FakeClock
from tests.support.timing import seconds

# Short enough for real time on Redis, long enough that one scheduling
# hiccup of the test does not let a renewed lease lapse.
TTL = 0.5
HEARTBEAT = 0.05
# Redis expires a key within a millisecond of its time; a little more.
MARGIN = 0.05


class Nodes(ABC):
    """Two nodes on one store, and time; each store says how its time passes."""

    def __init__(self, a: Leases, b: Leases) -> None:
        self.a = a
        self.b = b
        # The nodes' own clock, for their keepers: it moves only in run_for.
        self.clock = FakeClock()

    @abstractmethod
    async def pass_store_time(self, seconds: float) -> None:
        """Let the store's own time move on by ``seconds``."""

    async def pause(self, seconds: float) -> None:
        """The store's time passes (a bit more on Redis) while no node runs."""
        await self.pass_store_time(seconds)

    async def run_for(self, seconds: float) -> None:
        """Time passes for the store and the nodes' keepers alike."""
        for _ in range(round(seconds / HEARTBEAT)):
            await self.clock.advance(HEARTBEAT)
            await self.pass_store_time(HEARTBEAT)


class LocalNodes(Nodes):
    def __init__(self) -> None:
        self.store_clock = FakeClock()
        a = LocalLeases("node-a", self.store_clock)
        super().__init__(a, a.peer("node-b"))

    async def pass_store_time(self, seconds: float) -> None:
        await self.store_clock.advance(seconds)


class RedisNodes(Nodes):
    async def pass_store_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds + MARGIN)


@pytest.fixture(params=["local", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    if request.param == "local":
        yield LocalNodes()
        return
    client = redis_client.connect(request.getfixturevalue("redis_url"))
    try:
        yield RedisNodes(RedisLeases(client, "node-a"), RedisLeases(client, "node-b"))
    finally:
        await redis_client.close(client)


async def test_one_owner_at_a_time(nodes: Nodes) -> None:
    assert await nodes.a.owner("call:1") is None
    lease = await nodes.a.acquire("call:1", TTL)
    assert lease is not None
    assert (lease.name, lease.node, lease.ttl) == ("call:1", "node-a", TTL)
    assert await nodes.b.acquire("call:1", TTL) is None
    assert await nodes.a.acquire("call:1", TTL) is None  # held, if by itself
    assert await nodes.a.owner("call:1") == "node-a"
    assert await nodes.b.owner("call:1") == "node-a"
    # Another name is another lease.
    assert await nodes.b.acquire("call:2", TTL) is not None
    assert await nodes.a.owner("call:2") == "node-b"


async def test_another_node_takes_over_after_the_ttl_when_the_owner_stops_renewing(nodes: Nodes) -> None:
    first = await nodes.a.acquire("subject:alice", TTL)
    assert first is not None
    await nodes.pause(TTL * 0.4)
    assert await nodes.b.acquire("subject:alice", TTL) is None
    await nodes.pause(TTL * 0.6)
    assert await nodes.a.owner("subject:alice") is None
    second = await nodes.b.acquire("subject:alice", TTL)
    assert second is not None
    assert await nodes.a.owner("subject:alice") == "node-b"


async def test_a_renewed_lease_outlasts_its_first_ttl(nodes: Nodes) -> None:
    lease = await nodes.a.acquire("call:1", TTL)
    assert lease is not None
    await nodes.pause(TTL * 0.4)
    assert await nodes.a.renew(lease)
    await nodes.pause(TTL * 0.7)
    assert await nodes.b.acquire("call:1", TTL) is None
    assert await nodes.b.owner("call:1") == "node-a"


async def test_a_node_that_lost_its_lease_cannot_renew_or_release_the_new_owners(nodes: Nodes) -> None:
    lost = await nodes.a.acquire("call:1", TTL)
    assert lost is not None
    await nodes.pause(TTL)
    assert not await nodes.a.renew(lost)  # lapsed, nobody holds it yet: still lost
    taken = await nodes.b.acquire("call:1", TTL)
    assert taken is not None
    assert not await nodes.a.renew(lost)
    await nodes.a.release(lost)
    assert await nodes.a.owner("call:1") == "node-b"
    assert await nodes.b.renew(taken)
    assert await nodes.a.acquire("call:1", TTL) is None


async def test_an_old_holding_stays_lost_when_its_node_takes_the_name_again(nodes: Nodes) -> None:
    old = await nodes.a.acquire("call:1", TTL)
    assert old is not None
    await nodes.pause(TTL)
    new = await nodes.a.acquire("call:1", TTL)
    assert new is not None
    assert not await nodes.a.renew(old)
    await nodes.a.release(old)
    assert await nodes.b.owner("call:1") == "node-a"
    assert await nodes.a.renew(new)


async def test_renewing_many_at_once_answers_each_as_renewing_it_alone(nodes: Nodes) -> None:
    held = [await nodes.a.acquire(f"call:{n}", TTL) for n in range(3)]
    other = await nodes.a.acquire("presence:alice", 2 * TTL)  # another ttl in the same batch
    assert all(held) and other is not None
    leases = [lease for lease in held if lease is not None]
    await nodes.a.release(leases[1])
    taken = await nodes.b.acquire("call:1", TTL)  # now another node's
    assert taken is not None
    await nodes.pause(0.6 * TTL)
    assert await nodes.a.renew_many([leases[0], other, leases[1], leases[2]]) == [True, True, False, True]
    assert await nodes.a.renew_many([]) == []
    assert await nodes.a.owner("call:1") == "node-b"  # a failed renewal took nothing
    await nodes.pause(0.6 * TTL)
    # Renewed: the first ttl is over, the holdings are not.
    assert await nodes.b.owner("call:0") == "node-a" and await nodes.b.owner("call:2") == "node-a"


async def test_the_fencing_token_grows_each_time_the_name_changes_hands(nodes: Nodes) -> None:
    tokens: list[int] = []
    for node in (nodes.a, nodes.b, nodes.a, nodes.a):
        lease = await node.acquire("connector:corp", TTL)
        assert lease is not None
        tokens.append(lease.token)
        await node.release(lease)
    lease = await nodes.b.acquire("connector:corp", TTL)
    assert lease is not None
    await nodes.pause(TTL)  # lapsed, not released
    after = await nodes.a.acquire("connector:corp", TTL)
    assert after is not None
    tokens += [lease.token, after.token]
    assert tokens == sorted(set(tokens)), tokens
    # Renewing keeps the holding, and its token.
    assert await nodes.a.renew(after)
    assert await nodes.a.acquire("connector:corp", TTL) is None


async def test_release_lets_another_node_acquire_at_once(nodes: Nodes) -> None:
    lease = await nodes.a.acquire("call:1", TTL)
    assert lease is not None
    await nodes.a.release(lease)
    assert await nodes.b.owner("call:1") is None
    assert await nodes.b.acquire("call:1", TTL) is not None
    await nodes.a.release(lease)  # twice: nothing, the new owner keeps it
    assert await nodes.a.owner("call:1") == "node-b"


async def test_a_lease_lasts_at_least_a_millisecond(nodes: Nodes) -> None:
    for ttl in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="at least 1 ms"):
            await nodes.a.acquire("call:1", ttl)
    assert await nodes.a.owner("call:1") is None


async def test_the_keeper_holds_its_leases_beyond_their_ttl(nodes: Nodes) -> None:
    lost: list[Lease] = []
    keeper = Keeper(nodes.a, HEARTBEAT, lost.append, nodes.clock)
    keeper.start()
    try:
        lease = await keeper.acquire("call:1", TTL)
        assert lease is not None
        assert keeper.held("call:1") == lease
        assert await keeper.acquire("call:1", TTL) is None
        await nodes.run_for(TTL * 3)
        assert await nodes.b.acquire("call:1", TTL) is None
        assert await nodes.b.owner("call:1") == "node-a"
        assert lost == []
    finally:
        await keeper.close()


async def test_the_keeper_reports_a_lease_it_lost(nodes: Nodes) -> None:
    lost: list[Lease] = []
    both_lost = asyncio.Event()

    def on_lost(lease: Lease) -> None:
        lost.append(lease)
        if len(lost) == 2:
            both_lost.set()

    keeper = Keeper(nodes.a, HEARTBEAT, on_lost, nodes.clock)
    keeper.start()
    try:
        lease = await keeper.acquire("call:1", TTL)
        kept = await keeper.acquire("call:2", TTL)
        assert lease is not None
        assert kept is not None
        await nodes.pause(TTL)  # node a stalled: no heartbeat while its leases lapsed
        taken = await nodes.b.acquire("call:1", TTL)
        assert taken is not None
        # call:2 lapsed too, but nobody took it: was it kept? It must be
        # reported lost all the same: its holding is over.
        await nodes.run_for(HEARTBEAT)
        # On Redis the renewals that beat started are round trips: wait for them.
        await asyncio.wait_for(both_lost.wait(), seconds())
        assert sorted(lost, key=lambda x: x.name) == [lease, kept]
        assert keeper.held("call:1") is None
        assert keeper.held("call:2") is None
        # Reported once; the new owner keeps its lease.
        await nodes.run_for(HEARTBEAT * 3)
        assert len(lost) == 2
        assert await nodes.a.owner("call:1") == "node-b"
        assert await nodes.b.renew(taken)
    finally:
        await keeper.close()
    assert await nodes.a.owner("call:1") == "node-b"  # close released only what it kept


async def test_closing_the_keeper_hands_its_leases_over_at_once(nodes: Nodes) -> None:
    keeper = Keeper(nodes.a, HEARTBEAT, lambda lease: None, nodes.clock)
    keeper.start()
    assert await keeper.acquire("call:1", TTL) is not None
    assert await keeper.acquire("call:2", TTL) is not None
    await keeper.release("call:2")
    assert keeper.held("call:2") is None
    assert await nodes.b.acquire("call:2", TTL) is not None
    await keeper.close()
    assert await nodes.b.acquire("call:1", TTL) is not None


class _Unreachable:
    """A store that answers acquisitions but whose renewals fail (a
    network cut right after): the keeper cannot tell whether it still holds."""

    def __init__(self, leases: LocalLeases) -> None:
        self.leases = leases
        self.node = leases.node

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        return await self.leases.acquire(name, ttl)

    async def renew(self, lease: Lease) -> bool:
        raise ConnectionError("store unreachable")

    async def renew_many(self, leases: Sequence[Lease]) -> list[bool]:
        raise ConnectionError("store unreachable")

    async def release(self, lease: Lease) -> None:
        raise ConnectionError("store unreachable")

    async def owner(self, name: str) -> str | None:
        raise ConnectionError("store unreachable")


async def test_the_keeper_counts_a_lease_lost_before_it_may_lapse_when_renewals_fail() -> None:
    clock = FakeClock()
    lost: list[Lease] = []
    keeper = Keeper(_Unreachable(LocalLeases("node-a", clock)), HEARTBEAT, lost.append, clock)
    keeper.start()
    try:
        lease = await keeper.acquire("call:1", TTL)
        assert lease is not None
        await clock.advance(TTL - 2 * HEARTBEAT)
        assert lost == []  # surely held past the next beat: the work goes on
        assert keeper.held("call:1") == lease
        await clock.advance(2 * HEARTBEAT)  # the ttl, since the acquisition was sent
        assert lost == [lease]
        assert keeper.held("call:1") is None
    finally:
        await keeper.close()


def test_a_node_id_never_holds_the_separator_of_redis_values() -> None:
    with pytest.raises(ValueError, match="no ':'"):
        RedisLeases(redis_client.connect("redis://127.0.0.1:1"), "node:a")


async def test_lapsed_local_leases_do_not_stay_in_memory() -> None:
    clock = FakeClock()
    leases = LocalLeases("node-a", clock)
    for number in range(5000):
        assert await leases.acquire(f"call:{number}", TTL) is not None
        if number % 1000 == 999:
            await clock.advance(TTL)  # a crashed owner's work: never released, never renewed
    # What a sweep leaves is at most the holdings still live, and the table
    # never grew past twice what was live at the last sweep.
    assert len(leases._table.holdings) <= 2000
