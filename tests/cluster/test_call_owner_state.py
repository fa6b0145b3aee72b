"""The calls' shared state, the same scenarios on the embedded and the Redis
implementations: the call sets (bounds, devices' calls, who is in a call),
the owners' bookkeeping, and presence told "in a call" across cores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from core.calls.incall import InCall
from core.cluster import redis_client
from core.cluster.call_sets import CallSets, LocalCallSets
from core.cluster.owners import CallOwners, LocalCallOwners, Orphan
from core.cluster.redis_call_sets import RedisCallSets
from core.cluster.redis_owners import RedisCallOwners
from tests.calls.support import eventually


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    connected = redis_client.connect(redis_url)
    yield connected
    await redis_client.close(connected)


@pytest.fixture(params=["local", "redis"])
def sets(request: pytest.FixtureRequest) -> CallSets:
    if request.param == "local":
        return LocalCallSets()
    return RedisCallSets(request.getfixturevalue("client"))


@pytest.fixture(params=["local", "redis"])
def owners(request: pytest.FixtureRequest) -> tuple[CallOwners, CallOwners]:
    """Two nodes' views of the same owners."""
    if request.param == "local":
        a = LocalCallOwners("a")
        return a, a.peer("b")
    client = request.getfixturevalue("client")
    return RedisCallOwners(client, "a"), RedisCallOwners(client, "b")


async def test_reserving_counts_the_other_calls_and_releasing_frees_them(sets: CallSets) -> None:
    assert await sets.reserve("c1", "alice", "bob") == (0, 0)
    assert await sets.reserve("c2", "alice", "bob") == (1, 1)
    assert await sets.reserve("c1", "alice", "bob") == (1, 1)  # again: not counted twice
    await sets.answered("c1", "bob")
    assert await sets.reserve("c3", "carol", "bob") == (0, 1)
    for call_id, caller in (("c1", "alice"), ("c2", "alice"), ("c3", "carol")):
        await sets.release(call_id, caller, "bob")
    assert await sets.reserve("c4", "alice", "bob") == (0, 0)


async def test_the_calls_of_a_device(sets: CallSets) -> None:
    await sets.attach("c1", ("d1", "d2"))
    await sets.attach("c2", ("d2",))
    assert sorted(await sets.calls_of("d2")) == ["c1", "c2"]
    await sets.detach("c1", ("d1", "d2"))
    assert await sets.calls_of("d1") == []
    assert await sets.calls_of("d2") == ["c2"]


async def test_a_user_is_in_a_call_from_the_first_answered_call_to_the_last(sets: CallSets) -> None:
    assert await sets.join("c1", "alice") is True
    assert await sets.join("c2", "alice") is False
    assert await sets.busy("alice")
    assert await sets.leave("c1", "alice") is False
    assert await sets.leave("c1", "alice") is False  # not in it any more
    assert await sets.leave("c2", "alice") is True
    assert not await sets.busy("alice")


async def test_a_gone_nodes_calls_are_orphans_until_claimed(owners: tuple[CallOwners, CallOwners]) -> None:
    a, b = owners
    await a.announce("127.0.0.1:1", 0.3)
    await b.announce("127.0.0.1:2", 30)
    await a.claim("c1")
    await a.claim("c2")
    assert await b.address("a") == "127.0.0.1:1"
    assert await b.orphans() == []
    await asyncio.sleep(0.4)  # a's announcement lapses: a is gone
    assert await b.address("a") is None
    assert sorted(o.call_id for o in await b.orphans()) == ["c1", "c2"]
    await b.claim("c1", previous="a")
    await b.forget(Orphan("c2", "a"))  # it had ended
    assert await b.orphans() == []
    assert await a.orphans() == []  # b's own calls are not a's orphans


async def test_a_lease_lost_under_a_live_owner_makes_an_orphan(owners: tuple[CallOwners, CallOwners]) -> None:
    a, b = owners
    await a.announce("127.0.0.1:1", 30)
    await b.announce("127.0.0.1:2", 30)
    await a.claim("c1")
    await a.disown("c1", orphaned=True)
    assert await b.orphans() == [Orphan("c1", None)]
    await b.claim("c1")
    assert await a.orphans() == []


async def test_a_restarted_node_orphans_its_previous_runs_calls(owners: tuple[CallOwners, CallOwners]) -> None:
    a, b = owners
    await a.claim("c1")
    await a.restart()
    assert await b.orphans() == [Orphan("c1", None)]


async def test_inputs_sent_to_a_node_reach_its_inbox_once(owners: tuple[CallOwners, CallOwners]) -> None:
    a, b = owners
    await b.send("a", "c1", "d1")
    await b.send("a", "c2", "d2")
    assert await a.inbox() == [("c1", "d1"), ("c2", "d2")]
    assert await a.inbox() == []
    assert await b.inbox() == []


async def test_presence_hears_in_call_while_any_core_has_an_answered_call(client: redis.Redis) -> None:
    told: list[tuple[str, bool]] = []

    async def listener(username: str, in_call: bool) -> None:
        told.append((username, in_call))

    shared = RedisCallSets(client)
    core_a, core_b = InCall(listener, shared), InCall(listener, shared)
    core_a.start()
    core_b.start()
    try:
        core_a.add("c1", "alice", "bob")
        await eventually(lambda: ("bob", True) in told)
        core_b.add("c2", "alice", "carol")
        await eventually(lambda: ("carol", True) in told)
        assert await core_b.busy_anywhere("bob")  # bob's call is on core A
        core_a.remove("c1", "alice", "bob")
        await eventually(lambda: ("bob", False) in told)
        assert await core_a.busy_anywhere("alice")  # still in c2, on core B
        core_b.remove("c2", "alice", "carol")
        await eventually(lambda: ("alice", False) in told)
        assert told.count(("alice", True)) == 1
        assert told.index(("alice", True)) < told.index(("alice", False))
        assert not await core_a.busy_anywhere("alice")
    finally:
        await core_a.stop()
        await core_b.stop()
