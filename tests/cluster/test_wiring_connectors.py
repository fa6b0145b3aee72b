"""Connector runs in a cluster: each run holds its connector's lease, so two
nodes running the schedule on one database run a connector once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncEngine

from core.cluster import redis_client
from core.cluster.leases import Keeper
from core.cluster.redis_leases import RedisLeases
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.directory.connector import FetchResult, Schedule
from core.directory.records import RunState
from core.directory.runner import RUN_LEASES, AlreadyRunning, RunLeases, SyncRunner
from core.directory.store import DirectoryStore

LEASE = 1.0
HEARTBEAT = 0.2


class Counting:
    """A connector that counts its fetches; each takes ``delay`` seconds."""

    type = "test"

    def __init__(self, fetches: list[str], node: str, delay: float = 0.0, gate: asyncio.Event | None = None) -> None:
        self.name = "corp"
        self.source = "test:corp"
        self.schedule = Schedule(interval=3600)
        self._fetches = fetches
        self._node = node
        self._delay = delay
        self.gate = gate
        self.fetching = asyncio.Event()

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult:
        self._fetches.append(self._node)
        self.fetching.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self._delay)
        return FetchResult(full=True, records=(), cursor={"n": len(self._fetches)})


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(upgrade, postgres_url)
    engine = create_engine(postgres_url)
    try:
        yield engine
    finally:
        await dispose(engine)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis_client.connect(redis_url)
    try:
        yield client
    finally:
        await redis_client.close(client)


async def node(client: redis.Redis, name: str) -> tuple[RunLeases, Keeper]:
    leases = RedisLeases(client, name)
    keeper = Keeper(leases, HEARTBEAT, lambda lease: None)
    keeper.start()
    return RunLeases(keeper, leases, ttl=LEASE), keeper


async def test_two_schedules_run_a_connector_once(engine: AsyncEngine, client: redis.Redis) -> None:
    fetches: list[str] = []
    runners, keepers = [], []
    for name in ("core-a", "core-b"):
        leases, keeper = await node(client, name)
        # A run long enough that the other node's first try finds it under way.
        connector = Counting(fetches, name, delay=0.3)
        runners.append(SyncRunner(DirectoryStore(engine), [connector], leases=leases))
        keepers.append(keeper)
    schedules = [asyncio.create_task(runner.run_forever()) for runner in runners]
    try:
        await asyncio.sleep(1.5)
    finally:
        for task in schedules:
            task.cancel()
        await asyncio.gather(*schedules, return_exceptions=True)
        for keeper in keepers:
            await keeper.close()
    assert len(fetches) == 1, fetches
    last = await DirectoryStore(engine).last_run("corp")
    assert last is not None and last.state is RunState.SUCCEEDED


async def test_a_schedule_waits_for_a_run_made_on_another_node(engine: AsyncEngine, client: redis.Redis) -> None:
    # The first node's run is over before the second node's schedule starts:
    # the second counts it (its interval has not passed) instead of running.
    fetches: list[str] = []
    leases_a, keeper_a = await node(client, "core-a")
    leases_b, keeper_b = await node(client, "core-b")
    runner_a = SyncRunner(DirectoryStore(engine), [Counting(fetches, "core-a")], leases=leases_a)
    runner_b = SyncRunner(DirectoryStore(engine), [Counting(fetches, "core-b")], leases=leases_b)
    try:
        assert (await runner_a.run("corp")).state is RunState.SUCCEEDED
        schedule = asyncio.create_task(runner_b.run_forever())
        await asyncio.sleep(0.5)
        schedule.cancel()
        await asyncio.gather(schedule, return_exceptions=True)
    finally:
        await keeper_a.close()
        await keeper_b.close()
    assert fetches == ["core-a"]


async def test_run_now_on_another_node_is_refused_naming_the_runner(engine: AsyncEngine, client: redis.Redis) -> None:
    fetches: list[str] = []
    gate = asyncio.Event()
    leases_a, keeper_a = await node(client, "core-a")
    leases_b, keeper_b = await node(client, "core-b")
    connector_a = Counting(fetches, "core-a", gate=gate)
    runner_a = SyncRunner(DirectoryStore(engine), [connector_a], leases=leases_a)
    runner_b = SyncRunner(DirectoryStore(engine), [Counting(fetches, "core-b")], leases=leases_b)
    try:
        running = asyncio.create_task(runner_a.run("corp"))
        await connector_a.fetching.wait()
        with pytest.raises(AlreadyRunning) as caught:
            await runner_b.run("corp")
        assert str(caught.value) == "connector corp is already running on node core-a"
        # A node starting meanwhile leaves the live run alone.
        assert await runner_b.fail_interrupted_runs() == 0
        last = await DirectoryStore(engine).last_run("corp")
        assert last is not None and last.state is RunState.RUNNING
        gate.set()
        assert (await running).state is RunState.SUCCEEDED
        # Held for the run's duration (renewed past the ttl), then released.
        assert await leases_a.holder("corp") is None
    finally:
        gate.set()
        await keeper_a.close()
        await keeper_b.close()
    assert fetches == ["core-a"]


async def test_a_run_whose_lease_lapsed_is_failed_by_the_next_start(engine: AsyncEngine, client: redis.Redis) -> None:
    store = DirectoryStore(engine)
    # A node died mid-run: its run is RUNNING and nobody holds the lease.
    await store.start_run("corp", full=True)
    assert await RedisLeases(client, "core-a").owner(RUN_LEASES + "corp") is None
    leases_b, keeper_b = await node(client, "core-b")
    try:
        runner_b = SyncRunner(store, [Counting([], "core-b")], leases=leases_b)
        assert await runner_b.fail_interrupted_runs() == 1
    finally:
        await keeper_b.close()
    last = await store.last_run("corp")
    assert last is not None and last.state is RunState.FAILED


async def test_a_run_whose_lease_is_lost_stops(engine: AsyncEngine, client: redis.Redis) -> None:
    fetches: list[str] = []
    gate = asyncio.Event()
    leases_a, keeper_a = await node(client, "core-a")
    connector_a = Counting(fetches, "core-a", gate=gate)
    runner_a = SyncRunner(DirectoryStore(engine), [connector_a], leases=leases_a)
    try:
        running = asyncio.create_task(runner_a.run("corp"))
        await connector_a.fetching.wait()
        lease = keeper_a.held(RUN_LEASES + "corp")
        assert lease is not None
        runner_a.lease_lost(lease)
        with pytest.raises(asyncio.CancelledError):
            await running
    finally:
        gate.set()
        await keeper_a.close()
