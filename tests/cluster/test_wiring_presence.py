"""Presence on two cores (one PostgreSQL, one Redis) across what the fault
tests (tests/cluster/test_faults.py) do to a cluster: a client leaving
without logging out, and a Redis restart that lost every key.

- A device whose streams closed keeps its published status through its
  grace period, so it may outrank another device's newer one (AVAILABLE
  beats AWAY); logged out, it leaves at once.
- After Redis lost its data, the watchers' logs are gone: a watcher's
  resume is refused (it must resynchronise), and once it has opened its
  session again it hears the subject's changes, owned by lease again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from cli.cluster import provision_hop_key
from core import failures
from core.cluster.redis_devices import node_key
from core.db.migrate import upgrade
from core.events.log import EventsExpired
from core.presence.rules import Status
from tests.cluster.test_wiring import (
    CLUSTER,
    COALESCE_MS,
    GRACE,
    KILLABLE,
    ROOT,
    Cluster,
    cluster,
    eventually,
    last_seq,
    presence_of,
    status,
)
from tests.support.core import add_subscriber
from tests.support.core import test_config as config_for
from tests.support.redis import Redis, require_redis
from tests.support.server import throwaway
from tests.support.timing import seconds
from wac.v1 import presence_pb2

__all__ = ["cluster"]  # the fixture, shared with test_wiring.py

T = TypeVar("T")


@pytest.fixture
def private_redis() -> Iterator[Redis]:
    """A Redis of this test's own: it is restarted."""
    program = require_redis()
    with throwaway(lambda directory: Redis(directory, program), "wac-redis-") as server:
        yield server


@pytest.fixture
async def restartable(tmp_path: Path, postgres_url: str, private_redis: Redis) -> AsyncIterator[Cluster]:
    """``cluster``, on a Redis of its own."""
    env = {**CLUSTER, "WAC_CORE_DATABASE_URL": postgres_url, "WAC_CLUSTER_REDIS_URL": private_redis.url()}
    await asyncio.to_thread(upgrade, postgres_url)
    (tmp_path / "keys").mkdir()
    env["WAC_CORE_HOP_KEY"] = await provision_hop_key(config_for(tmp_path / "keys", env), tmp_path / "keys" / "hop")
    async with AsyncExitStack() as stack:
        yield Cluster(tmp_path, env, stack)


async def retried(step: Callable[[], Awaitable[T]]) -> T:
    """``step``, again while Redis is coming back: what a client gets as
    UNAVAILABLE and retries (a redis connection error is UNAVAILABLE at the
    RPC's edge, core/cluster/choose.py's outage registry)."""
    deadline = asyncio.get_running_loop().time() + seconds(10)
    while True:
        try:
            return await step()
        except (failures.Unavailable, redis.ConnectionError, redis.TimeoutError):
            assert asyncio.get_running_loop().time() < deadline, "Redis never came back"
            await asyncio.sleep(0.1)


async def test_a_closed_device_outranks_through_its_grace_a_logged_out_one_leaves(cluster: Cluster) -> None:
    a = await cluster.core("core-a")
    b = await cluster.core("core-b")
    assert a.presence is not None
    for name in ("alice", "bob"):
        await add_subscriber(a, name)
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")
    for device in ("alice-1", "alice-2"):
        await a.devices.stream_opened("alice", device)
    await a.presence.publish("alice", "alice-1", Status.AVAILABLE, "here")
    await a.presence.publish("alice", "alice-2", Status.AWAY, "away")
    assert await status(b, "alice") is Status.AVAILABLE
    # alice-1's client goes without logging out: within its grace it still
    # counts, and AVAILABLE outranks alice-2's newer AWAY.
    await a.devices.stream_closed("alice", "alice-1")
    view = await b.presence.read(None, "alice")  # type: ignore[union-attr]
    assert (view.state.status, view.state.note) == (Status.AVAILABLE, "here")
    seen = await last_seq(b, "bob-1")
    # Logged out: gone at once, and the watcher hears alice-2's status.
    await a.devices.ended("alice", "alice-1")

    async def heard_away() -> bool:
        heard = presence_of(await b.events.read("bob-1", seen), "alice")
        return [(p.status, p.note) for p in heard] == [(presence_pb2.Presence.AWAY, "away")]

    await eventually(heard_away, "bob never heard alice's remaining device")


async def test_after_redis_lost_its_data_a_resynchronised_watcher_hears_changes(
    restartable: Cluster, private_redis: Redis
) -> None:
    a = await restartable.core("core-a")
    b = await restartable.core("core-b")
    assert a.presence is not None
    for name in ("alice", "bob"):
        await add_subscriber(a, name)
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")
    await a.devices.stream_opened("alice", "alice-1")
    await a.presence.publish("alice", "alice-1", Status.AVAILABLE, "before")

    async def heard(note: str) -> bool:
        return any(p.note == note for p in presence_of(await b.events.read("bob-1", 0), "alice"))

    await eventually(lambda: heard("before"), "bob never heard alice before the restart")
    seen = await last_seq(b, "bob-1")

    private_redis.stop()
    private_redis.start(port=private_redis.port)

    # bob's resume is refused (his events are gone): he resynchronises,
    # opening his session again as Subscribe does.
    with pytest.raises(EventsExpired):
        await retried(lambda: b.events.read("bob-1", seen))
    await retried(lambda: b.events.open("bob-1", "bob"))
    # Changed on either core: each hands it to the subject's owner, whose
    # lease is taken again on the restarted Redis.
    for core, note in ((a, "after on a"), (b, "after on b")):
        assert core.presence is not None
        await retried(lambda: core.presence.publish("alice", "alice-1", Status.BUSY, note))  # type: ignore[union-attr]  # noqa: B023
        await eventually(lambda: heard(note), f"bob never heard alice's change {note!r} after the restart")  # noqa: B023
    assert await a.leases.owner("presence:alice") in {"core-a", "core-b"}


async def test_a_core_restarted_under_its_node_id_takes_its_subjects_back_with_the_latest_state(
    cluster: Cluster,
) -> None:
    b = await cluster.core("core-b")
    for name in ("alice", "bob"):
        await add_subscriber(b, name)
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")

    async def unowned() -> bool:
        return await b.leases.owner("presence:alice") is None

    # Core B took alice when she was created; once it let her go, her
    # device's arrival gives her to the child.
    await eventually(unowned, "core B never let alice go")
    env = cluster.node_env("core-a")
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", KILLABLE, str(cluster.tmp_path / "core-a"), json.dumps(env), "alice", "alice-1"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), seconds(30))
        assert line.strip() == b"ready"
        # The child owns alice's presence: her device came online there.
        assert await b.leases.owner("presence:alice") == "core-a"
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    # Back at once under the same node id, before its predecessor's lease
    # and heartbeat lapsed (held up here, however long the start takes):
    # no sweep sees the node dead.
    assert b.shared.redis is not None
    await b.shared.redis.set(node_key("core-a"), "beating", px=60_000)
    a = await cluster.core("core-a")
    assert a.presence is not None
    await a.devices.stream_opened("alice", "alice-2")
    seen = await last_seq(b, "bob-1")
    for n in range(3):
        await a.presence.publish("alice", "alice-2", Status.BUSY, f"note {n}")
        await asyncio.sleep(2 * COALESCE_MS / 1000)

    async def latest() -> bool:
        heard = presence_of(await b.events.read("bob-1", seen), "alice")
        return bool(heard) and (heard[-1].status, heard[-1].note) == (presence_pb2.Presence.BUSY, "note 2")

    await eventually(latest, "bob never heard alice's latest state")
    # The dead process's device goes through its grace like any dead node's.
    await asyncio.sleep(GRACE + 1.0)
    assert await a.devices.online_devices("alice") == ["alice-2"]


async def test_a_change_held_when_the_lease_went_is_told_once_the_subject_is_owned_again(cluster: Cluster) -> None:
    # A window long enough to lose the lease inside it, shorter than a
    # subject's idle time (two leases), after which its lease is given up.
    cluster.env["WAC_PRESENCE_COALESCE_MS"] = "1500"
    a = await cluster.core("core-a")
    b = await cluster.core("core-b")
    assert a.presence is not None and a.shared.redis is not None
    for name in ("alice", "bob"):
        await add_subscriber(a, name)
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")

    async def unowned() -> bool:
        return await a.leases.owner("presence:alice") is None

    await eventually(unowned, "nobody let alice go")
    seen = await last_seq(b, "bob-1")
    # Told at once (core A takes alice), then a change held for the window's end.
    await a.devices.stream_opened("alice", "alice-1")
    await a.presence.publish("alice", "alice-1", Status.AWAY, "held")
    assert a.keeper.held("presence:alice") is not None
    # The lease goes under core A (as when Redis lost its keys).
    await a.shared.redis.delete("wac:lease:presence:alice")

    async def lost() -> bool:
        return a.keeper.held("presence:alice") is None

    await eventually(lost, "core A never noticed it lost alice")

    async def heard_held() -> bool:
        heard = presence_of(await b.events.read("bob-1", seen), "alice")
        return bool(heard) and (heard[-1].status, heard[-1].note) == (presence_pb2.Presence.AWAY, "held")

    await eventually(heard_held, "the change held when the lease went was never told")
