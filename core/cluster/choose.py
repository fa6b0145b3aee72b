"""The one place that chooses between the embedded and the cluster's
implementations of shared state, from ``[cluster] redis_url`` (empty:
embedded). ``core/server.py`` calls it once and wires what it returns (its
Redis client, for the other cluster pieces); nothing else sees a Redis type.

Embedded: the event log and device registry in this process's memory,
leases in memory (one core per data dir, by the data dir's lock, so nothing
is contended: the Keeper is not started). Cluster: everything on the one
Redis client, the node's heartbeat beating, the device registry swept every
heartbeat by one node at a time (lease ``devices-sweep``), and the Keeper
renewing this node's leases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.devices import DeviceRegistry, LocalDeviceRegistry
from core.cluster.leases import Keeper, Lease, Leases, LocalLeases
from core.cluster.loops import end_if_stopping, stopping
from core.cluster.node import node_id
from core.db import outage
from core.events.log import EventLog
from core.events.memory import MemoryEventLog
from core.presence.subjects import LocalSubjects, Subjects
from settings.config import Config

# Redis's client and the implementations on it load only in a cluster
# (redis_url set): an embedded core does not carry them.
if TYPE_CHECKING:
    import redis.asyncio as redis

    from core.cluster.redis_devices import RedisDeviceRegistry
    from core.events.redis_log import RedisEventLog

log = logging.getLogger("wac.cluster")

# The lease under which one node at a time sweeps the device registry.
DEVICES_SWEEP = "devices-sweep"
# How often the embedded event log drops the logs nobody reads.
EVENT_LOG_SWEEP = 30.0
# What a request failing on Redis is told (UNAVAILABLE).
REDIS_OUT_OF_REACH = "the shared state (Redis) is unreachable; retry shortly"


@dataclass
class SharedState:
    """The shared state of one node, chosen; ``start`` it, ``close`` it last."""

    node: str
    # None when embedded.
    redis: redis.Redis | None
    leases: Leases
    devices: DeviceRegistry
    events: EventLog
    lease_seconds: float
    heartbeat_seconds: float
    clock: Clock = SYSTEM_CLOCK
    # Listeners of lost leases, by the prefix of their names.
    _lost: dict[str, Callable[[Lease], None]] = field(default_factory=dict)
    _memory_events: MemoryEventLog | None = None
    _redis_devices: RedisDeviceRegistry | None = None
    _redis_events: RedisEventLog | None = None
    # Renews this node's leases; tells ``lease_lost`` of the ones it loses.
    keeper: Keeper = field(init=False)

    def __post_init__(self) -> None:
        self.keeper = Keeper(self.leases, self.heartbeat_seconds, self.lease_lost, self.clock)

    @property
    def clustered(self) -> bool:
        return self.redis is not None

    def on_lost(self, prefix: str, listener: Callable[[Lease], None]) -> None:
        """Tell ``listener`` of each lease named ``prefix...`` that the
        Keeper lost (the work under it must stop: another node may take it)."""
        self._lost[prefix] = listener

    def lease_lost(self, lease: Lease) -> None:
        for prefix, listener in self._lost.items():
            if lease.name.startswith(prefix):
                listener(lease)
                return
        log.warning("lost lease %s", lease.name)

    def presence_subjects(self, online_usernames: Callable[[], Awaitable[Collection[str]]]) -> Subjects:
        """Who owns which presence subject; ``online_usernames``: the rows'
        connected subscribers (what a cluster's "domain" watchers are)."""
        if self.redis is None:
            return LocalSubjects()
        from core.cluster.redis_presence import LEASE_PREFIX as PRESENCE_LEASES
        from core.cluster.redis_presence import RedisSubjects

        subjects = RedisSubjects(
            self.redis,
            self.keeper,
            self.leases,
            online_usernames=online_usernames,
            lease_seconds=self.lease_seconds,
            heartbeat_seconds=self.heartbeat_seconds,
            clock=self.clock,
        )
        self.on_lost(PRESENCE_LEASES, subjects.lease_lost)
        return subjects

    async def start(self) -> list[asyncio.Task[Any]]:
        """Start what runs in the background; the tasks are the caller's to
        cancel on stop, before ``close``."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Any]] = []
        if self._memory_events is not None:
            tasks.append(loop.create_task(_sweep_events(self._memory_events, self.clock), name="event-log-sweep"))
        if self._redis_events is not None:
            await self._redis_events.start()
        if self._redis_devices is not None:
            # Beating before anything opens a stream: a sweep elsewhere must
            # not take this node for dead. A previous process of this node
            # id left its devices first.
            await self._redis_devices.restart()
            await self._redis_devices.heartbeat()
            self.keeper.start()
            tasks.append(loop.create_task(self._redis_devices.keep_alive(), name="devices-heartbeat"))
            tasks.append(loop.create_task(self._sweep_devices(self._redis_devices), name="devices-sweep"))
        return tasks

    async def close(self) -> None:
        """Leave the cluster: the devices' heartbeat goes (another node's
        sweep starts their graces at once), the leases are released, the
        event log stops and the client closes. Idempotent enough for a
        failed start: each step is tried."""
        if self.redis is None:
            return
        steps: list[Callable[[], Awaitable[None]]] = []
        if self._redis_devices is not None:
            steps.append(self._redis_devices.close)
        steps.append(self.keeper.close)
        if self._redis_events is not None:
            steps.append(self._redis_events.stop)
        for step in steps:
            try:
                await step()
            except Exception:  # the next step still runs
                log.warning("cluster: %s failed on stop", getattr(step, "__qualname__", step), exc_info=True)
        from core.cluster import redis_client

        await redis_client.close(self.redis)

    async def _sweep_devices(self, devices: RedisDeviceRegistry) -> None:
        import redis.asyncio as redis

        while True:
            end_if_stopping()
            await self.clock.sleep(self.heartbeat_seconds)
            try:
                held = self.keeper.held(DEVICES_SWEEP) or await self.keeper.acquire(DEVICES_SWEEP, self.lease_seconds)
                if held is not None:
                    await devices.sweep()
            except (redis.RedisError, OSError):
                if stopping():
                    raise
                log.warning("devices: sweep failed; retrying in %g s", self.heartbeat_seconds, exc_info=True)


def shared_state(config: Config, clock: Clock = SYSTEM_CLOCK) -> SharedState:
    """This node's shared state, as ``[cluster]`` says."""
    cluster = config.cluster
    node = node_id(cluster.node_id)
    grace = config.presence.grace_period
    if not cluster.redis_url:
        events = _memory_event_log(config, clock)
        leases = LocalLeases(node, clock)
        state = SharedState(
            node=node,
            redis=None,
            leases=leases,
            devices=LocalDeviceRegistry(grace_period=grace, clock=clock),
            events=events,
            lease_seconds=cluster.lease_seconds,
            heartbeat_seconds=cluster.heartbeat_seconds,
            clock=clock,
            _memory_events=events,
        )
        return state
    import redis.asyncio as redis

    from core.cluster import redis_client
    from core.cluster.redis_devices import RedisDeviceRegistry
    from core.cluster.redis_leases import RedisLeases
    from core.events.redis_log import RedisEventLog

    client = redis_client.connect(cluster.redis_url)
    # A request failing on Redis being out of reach (restarting, failing
    # over) is UNAVAILABLE, as for the database, not INTERNAL.
    for kind in (redis.ConnectionError, redis.TimeoutError):
        outage.register(kind, REDIS_OUT_OF_REACH)
    redis_leases = RedisLeases(client, node)
    devices = RedisDeviceRegistry(
        client, node, grace_period=grace, heartbeat_interval=cluster.heartbeat_seconds, clock=clock
    )
    redis_events = RedisEventLog(
        client,
        node=node,
        retention=config.events.retention,
        max_events=config.events.max_events_per_session,
        clock=clock,
    )
    state = SharedState(
        node=node,
        redis=client,
        leases=redis_leases,
        devices=devices,
        events=redis_events,
        lease_seconds=cluster.lease_seconds,
        heartbeat_seconds=cluster.heartbeat_seconds,
        clock=clock,
        _redis_devices=devices,
        _redis_events=redis_events,
    )
    return state


def _memory_event_log(config: Config, clock: Clock) -> MemoryEventLog:
    events = config.events
    return MemoryEventLog(retention=events.retention, max_events=events.max_events_per_session, clock=clock)


async def _sweep_events(events: MemoryEventLog, clock: Clock) -> None:
    while True:
        await clock.sleep(EVENT_LOG_SWEEP)
        events.sweep()
