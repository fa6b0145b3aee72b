"""The device registry's scenarios, run on the embedded registry (a fake
clock) and on Redis (real time, a short grace period); then what only a
cluster has: devices held on two nodes, and a node that dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as redis_client

from core.clock import SYSTEM_CLOCK
from core.cluster.devices import DeviceRegistry, LocalDeviceRegistry
from core.cluster.redis_devices import GRACES, NODES, RedisDeviceRegistry, node_key
from tests.calls.support import eventually
from tests.support.clock import FakeClock
from tests.support.timing import SCALE

Told = list[tuple[str, str]]

LOCAL_GRACE = 30.0
# Real time on Redis: short, yet long beside a round trip to a local Redis
# (scaled with every other timeout on a slow machine).
REDIS_GRACE = 0.3 * SCALE
HEARTBEAT = 0.1 * SCALE
NODE_TTL = 0.3 * SCALE


@dataclass
class Node:
    registry: DeviceRegistry
    online: Told = field(default_factory=list)
    lost: Told = field(default_factory=list)

    def __post_init__(self) -> None:
        async def online(username: str, session_id: str) -> None:
            self.online.append((username, session_id))

        async def lost(username: str, session_id: str) -> None:
            self.lost.append((username, session_id))

        self.registry.on_online(online)
        self.registry.on_lost(lost)


class LocalSetup:
    """One embedded registry; time moves only when the test says."""

    grace = LOCAL_GRACE

    def __init__(self) -> None:
        self.clock = FakeClock()

    def node(self) -> Node:
        return Node(LocalDeviceRegistry(grace_period=self.grace, clock=self.clock))

    async def elapse(self, delay: float) -> None:
        await self.clock.advance(delay)

    async def eventually(self, check: Callable[[], bool]) -> None:
        # Fake time fires every timer due at once: no waiting.
        assert check()


class RedisSetup:
    """Registries of as many nodes as the test asks, on one Redis."""

    grace = REDIS_GRACE

    def __init__(self, client: redis_client.Redis) -> None:
        self.client = client
        self.nodes = 0

    def node(self) -> Node:
        return Node(self.registry())

    def registry(self) -> RedisDeviceRegistry:
        self.nodes += 1
        return RedisDeviceRegistry(
            self.client,
            f"node-{self.nodes}",
            grace_period=self.grace,
            heartbeat_interval=HEARTBEAT,
            node_ttl=NODE_TTL,
            clock=SYSTEM_CLOCK,
        )

    async def elapse(self, delay: float) -> None:
        await asyncio.sleep(delay)

    async def eventually(self, check: Callable[[], bool]) -> None:
        await eventually(check)


Setup = LocalSetup | RedisSetup


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[redis_client.Redis]:
    client = redis_client.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["local", "redis"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    if request.param == "local":
        yield LocalSetup()
        return
    client = redis_client.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisSetup(client)
    finally:
        await client.aclose()


async def test_a_device_is_online_with_its_first_stream(setup: Setup) -> None:
    node = setup.node()
    await node.registry.stream_opened("alice", "s1")
    await node.registry.stream_opened("alice", "s1")  # a second stream of the same device
    assert node.online == [("alice", "s1")], "online once, with its first stream"
    assert await node.registry.online_devices("alice") == ["s1"]
    assert await node.registry.online_devices("bob") == []


async def test_a_device_stays_online_through_its_grace_period_then_is_lost(setup: Setup) -> None:
    node = setup.node()
    await node.registry.stream_opened("alice", "s1")
    await node.registry.stream_opened("alice", "s1")
    await node.registry.stream_closed("alice", "s1")
    await node.registry.stream_closed("alice", "s1")
    await setup.elapse(setup.grace / 3)
    assert await node.registry.online_devices("alice") == ["s1"], "within the grace period"
    assert node.lost == []

    await setup.elapse(setup.grace * 2 / 3)
    await setup.eventually(lambda: node.lost == [("alice", "s1")])
    assert await node.registry.online_devices("alice") == []
    await setup.elapse(setup.grace)
    assert node.lost == [("alice", "s1")], "told once"


async def test_a_stream_reopened_within_the_grace_period_keeps_the_device(setup: Setup) -> None:
    node = setup.node()
    await node.registry.stream_opened("alice", "s1")
    await node.registry.stream_closed("alice", "s1")
    await setup.elapse(setup.grace / 2)
    await node.registry.stream_opened("alice", "s1")
    await setup.elapse(2 * setup.grace)
    assert node.lost == []
    assert node.online == [("alice", "s1")], "no second online"
    assert await node.registry.online_devices("alice") == ["s1"]


async def test_an_ended_session_is_lost_at_once(setup: Setup) -> None:
    node = setup.node()
    await node.registry.stream_opened("alice", "s1")
    await node.registry.stream_opened("alice", "s2")
    await node.registry.stream_closed("alice", "s1")
    await node.registry.ended("alice", "s1")
    assert node.lost == [("alice", "s1")]
    assert await node.registry.online_devices("alice") == ["s2"]
    await setup.elapse(2 * setup.grace)
    assert node.lost == [("alice", "s1")], "told once: its grace went with it"
    await node.registry.ended("alice", "s1")
    assert node.lost == [("alice", "s1")], "an ended session ends once"


async def test_streams_opened_and_closed_at_once_are_all_counted(setup: Setup) -> None:
    node = setup.node()
    await asyncio.gather(*(node.registry.stream_opened("alice", "s1") for _ in range(20)))
    await asyncio.gather(*(node.registry.stream_closed("alice", "s1") for _ in range(19)))
    await setup.elapse(2 * setup.grace)
    assert (node.online, node.lost) == ([("alice", "s1")], []), "one stream is still open"
    await node.registry.stream_closed("alice", "s1")
    await setup.elapse(setup.grace)
    await setup.eventually(lambda: node.lost == [("alice", "s1")])


# What only a cluster has: several nodes on one Redis.


async def heartbeat_expired(redis: redis_client.Redis, registry: RedisDeviceRegistry) -> None:
    async def gone() -> bool:
        return not await redis.exists(node_key(registry.node))

    await eventually(gone)


@pytest.fixture
def cluster(redis: redis_client.Redis) -> RedisSetup:
    return RedisSetup(redis)


async def test_a_device_with_streams_on_two_nodes_is_online_while_either_holds_one(cluster: RedisSetup) -> None:
    a, b = cluster.node(), cluster.node()
    await a.registry.stream_opened("alice", "s1")
    await b.registry.stream_opened("alice", "s1")
    assert (a.online, b.online) == ([("alice", "s1")], []), "online once, where it came online"

    await a.registry.stream_closed("alice", "s1")
    await cluster.elapse(2 * cluster.grace)
    assert await b.registry.online_devices("alice") == ["s1"], "node B still holds a stream"
    assert a.lost + b.lost == []

    await b.registry.stream_closed("alice", "s1")
    assert await a.registry.online_devices("alice") == ["s1"], "within the grace period"
    await cluster.eventually(lambda: b.lost == [("alice", "s1")])
    await cluster.elapse(cluster.grace)
    assert a.lost == [], "lost is told once in the cluster"
    assert await a.registry.online_devices("alice") == []


async def test_a_grace_ended_by_its_node_and_a_sweep_at_once_is_told_once(cluster: RedisSetup) -> None:
    a, b_registry = cluster.node(), cluster.registry()
    b = Node(b_registry)
    await a.registry.stream_opened("alice", "s1")
    await a.registry.stream_closed("alice", "s1")
    # Past the grace period, just as node A's timer fires.
    await cluster.elapse(cluster.grace)
    await b_registry.sweep()
    await cluster.eventually(lambda: len(a.lost + b.lost) == 1)
    await cluster.elapse(cluster.grace)
    assert a.lost + b.lost == [("alice", "s1")]


async def test_a_device_back_on_another_node_within_its_grace_is_not_lost(cluster: RedisSetup) -> None:
    a, b = cluster.node(), cluster.node()
    await a.registry.stream_opened("alice", "s1")
    await a.registry.stream_closed("alice", "s1")
    await cluster.elapse(cluster.grace / 2)
    # A page reload that lands on another core: node A's grace timer still runs.
    await b.registry.stream_opened("alice", "s1")
    await cluster.elapse(2 * cluster.grace)
    assert a.lost + b.lost == []
    assert a.online + b.online == [("alice", "s1")], "no second online"
    assert await a.registry.online_devices("alice") == ["s1"]


async def test_the_devices_of_a_dead_node_go_through_their_grace_on_another(
    cluster: RedisSetup, redis: redis_client.Redis
) -> None:
    a_registry, b_registry = cluster.registry(), cluster.registry()
    a, b = Node(a_registry), Node(b_registry)
    await a_registry.heartbeat()
    beating = asyncio.create_task(b_registry.keep_alive())
    try:
        await a_registry.stream_opened("alice", "s1")  # only on A
        await a_registry.stream_opened("alice", "s2")  # on A and B
        await b_registry.stream_opened("alice", "s2")
        await b_registry.stream_opened("bob", "s3")  # only on B

        # Node A dies: it beats no more, and its heartbeat expires.
        await heartbeat_expired(redis, a_registry)
        await b_registry.sweep()
        assert sorted(await b_registry.online_devices("alice")) == ["s1", "s2"], "s1 in its grace period"
        assert await redis.smembers(NODES) == {b_registry.node.encode()}, "node A is forgotten"
        assert b.lost == []

        await cluster.eventually(lambda: b.lost == [("alice", "s1")])
        assert await b_registry.online_devices("alice") == ["s2"], "B still holds s2"
        assert await b_registry.online_devices("bob") == ["s3"]
        await b_registry.sweep()
        await cluster.elapse(cluster.grace)
        assert a.lost == [] and b.lost == [("alice", "s1")], "told once, by the sweeping node"
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def test_a_node_that_leaves_hands_its_devices_to_the_next_sweep(cluster: RedisSetup) -> None:
    a_registry, b_registry = cluster.registry(), cluster.registry()
    a, b = Node(a_registry), Node(b_registry)
    await a_registry.heartbeat()
    await a_registry.stream_opened("alice", "s1")  # still open when A stops
    await a_registry.stream_opened("alice", "s2")
    await a_registry.stream_closed("alice", "s2")  # in the grace A started
    await a_registry.close()
    await b_registry.sweep()  # at once: no TTL to wait for
    assert sorted(await b_registry.online_devices("alice")) == ["s1", "s2"]
    await cluster.elapse(cluster.grace)
    await b_registry.sweep()
    await cluster.eventually(lambda: sorted(b.lost) == [("alice", "s1"), ("alice", "s2")])
    assert a.lost == []


async def test_the_graces_of_a_dead_node_are_ended_by_a_sweep(cluster: RedisSetup) -> None:
    # Node A's timers never fire (its clock stands still), as if it died
    # during the grace period it started.
    a_registry = RedisDeviceRegistry(
        cluster.client,
        "node-a",
        grace_period=cluster.grace,
        heartbeat_interval=HEARTBEAT,
        node_ttl=NODE_TTL,
        clock=FakeClock(start=time.time()),
    )
    a = Node(a_registry)
    b_registry, c_registry = cluster.registry(), cluster.registry()
    b, c = Node(b_registry), Node(c_registry)
    await a_registry.stream_opened("alice", "s1")
    await a_registry.stream_closed("alice", "s1")
    await b_registry.sweep()
    assert b.lost == [], "not yet over"
    await cluster.elapse(cluster.grace)
    # Two sweeps at once (a lease keeps this rare, not impossible): one tells.
    await asyncio.gather(b_registry.sweep(), c_registry.sweep())
    assert a.lost == []
    assert b.lost + c.lost == [("alice", "s1")]
    assert await b_registry.online_devices("alice") == []


async def test_a_node_whose_heartbeat_lapsed_holds_its_devices_again(
    cluster: RedisSetup, redis: redis_client.Redis
) -> None:
    a, b_registry = cluster.node(), cluster.registry()
    a_registry = a.registry
    assert isinstance(a_registry, RedisDeviceRegistry)
    await a_registry.heartbeat()
    await a_registry.stream_opened("alice", "s1")
    # Paused past its TTL: B sees it dead and starts the device's grace.
    await heartbeat_expired(redis, a_registry)
    await b_registry.sweep()
    assert await redis.zcard(GRACES) == 1, "in its grace period"
    await a_registry.heartbeat()  # awake again: it re-asserts its streams
    await cluster.elapse(2 * cluster.grace)
    await b_registry.sweep()
    assert a.lost == []
    assert await b_registry.online_devices("alice") == ["s1"]
    assert a.online == [("alice", "s1")], "it never went offline"
