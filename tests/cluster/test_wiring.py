"""core/server.py honours [cluster]: the embedded default builds what it did,
and two cores on one database and one Redis share devices and presence.

The cores are built in this process (tests/support/core.py), but for the
one killed: it runs in a child process, killed with SIGKILL, so that its
heartbeat and its leases lapse as a dead node's do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from cli.cluster import provision_hop_key
from core.cluster.devices import LocalDeviceRegistry
from core.cluster.leases import LocalLeases
from core.db.migrate import upgrade
from core.events.memory import MemoryEventLog
from core.presence.rules import Status
from core.presence.subjects import LocalSubjects
from core.server import Core, build_core
from tests.support.core import add_subscriber, running_core
from tests.support.core import test_config as config_for
from tests.support.timing import seconds
from wac.v1 import events_pb2, presence_pb2

ROOT = Path(__file__).resolve().parents[2]
GRACE = 1.0
COALESCE_MS = 400
CLUSTER = {
    "WAC_PRESENCE_GRACE_PERIOD": str(GRACE),
    "WAC_PRESENCE_COALESCE_MS": str(COALESCE_MS),
    # Every online subscriber watches every other: no contacts to set up.
    "WAC_PRESENCE_VISIBILITY": "domain",
    "WAC_CLUSTER_LEASE_SECONDS": "1",
    "WAC_CLUSTER_HEARTBEAT_SECONDS": "0.2",
    # One per machine: each core would bind the gateway's ports.
    "WAC_GATEWAY_ENABLED": "false",
}


async def test_the_embedded_default_builds_what_it_did(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data") as core:
        assert type(core.events) is MemoryEventLog
        assert type(core.devices) is LocalDeviceRegistry
        assert core.shared.redis is None and not core.shared.clustered
        assert type(core.leases) is LocalLeases
        assert core.presence is not None
        assert type(core.presence._shared) is LocalSubjects
        # Only the event log's sweep runs beside the core's own tasks.
        names = {task.get_name() for task in core.background}
        assert "event-log-sweep" in names
        assert not names & {"devices-heartbeat", "devices-sweep"}


class Cluster:
    """Cores on one PostgreSQL database and one Redis."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str], stack: AsyncExitStack) -> None:
        self.tmp_path = tmp_path
        self.env = dict(env)
        self.stack = stack

    def node_env(self, name: str) -> dict[str, str]:
        return {**self.env, "WAC_CLUSTER_NODE_ID": name}

    async def core(self, name: str, *, stopped_by_test: bool = False) -> Core:
        core = await build_core(config_for(self.tmp_path / name, self.node_env(name)), migrate=False)
        if not stopped_by_test:
            self.stack.push_async_callback(core.stop, 0.2)
        return core


@pytest.fixture
async def cluster(tmp_path: Path, postgres_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    env = {**CLUSTER, "WAC_CORE_DATABASE_URL": postgres_url, "WAC_CLUSTER_REDIS_URL": redis_url}
    await asyncio.to_thread(upgrade, postgres_url)
    # One hop key for every core, as wac cluster makes it: each core would
    # otherwise make its own and end the other's.
    (tmp_path / "keys").mkdir()
    env["WAC_CORE_HOP_KEY"] = await provision_hop_key(config_for(tmp_path / "keys", env), tmp_path / "keys" / "hop")
    async with AsyncExitStack() as stack:
        yield Cluster(tmp_path, env, stack)


def presence_of(events: list[events_pb2.Event], username: str) -> list[presence_pb2.Presence]:
    return [
        e.presence_changed for e in events if e.HasField("presence_changed") and e.presence_changed.username == username
    ]


async def last_seq(core: Core, session_id: str) -> int:
    """Where a session's log ends now: what a reader resumes after."""
    events = await core.events.read(session_id, 0)
    return events[-1].seq if events else 0


async def eventually(check: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + seconds(10)
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def status(core: Core, username: str) -> Status:
    assert core.presence is not None
    return (await core.presence.read(None, username)).state.status


async def test_a_second_core_leaves_the_first_cores_devices_online(cluster: Cluster) -> None:
    a = await cluster.core("core-a")
    assert a.shared.clustered
    await add_subscriber(a, "alice")
    await a.devices.stream_opened("alice", "alice-1")
    assert await status(a, "alice") is Status.AVAILABLE
    b = await cluster.core("core-b")
    assert await status(b, "alice") is Status.AVAILABLE
    assert await status(a, "alice") is Status.AVAILABLE
    assert await b.devices.online_devices("alice") == ["alice-1"]


async def test_a_quiet_subjects_lease_is_released(cluster: Cluster) -> None:
    a = await cluster.core("core-a")
    await add_subscriber(a, "alice")
    await a.devices.stream_opened("alice", "alice-1")
    assert await a.leases.owner("presence:alice") == "core-a"

    async def released() -> bool:
        return await a.leases.owner("presence:alice") is None

    # Idle for two leases, then given up: leases do not pile up.
    await eventually(released, "the quiet subject's lease is still held")
    assert a.keeper.held("presence:alice") is None
    # The next change takes it again.
    assert a.presence is not None
    await a.presence.publish("alice", "alice-1", Status.AWAY, "")
    assert await a.leases.owner("presence:alice") == "core-a"


async def test_a_watcher_on_another_core_hears_one_change_per_window(cluster: Cluster) -> None:
    a = await cluster.core("core-a")
    b = await cluster.core("core-b")
    assert a.presence is not None and b.presence is not None
    for name in ("alice", "bob"):
        await add_subscriber(a, name)
    # alice's device is on core A, which so owns her presence; bob watches on B.
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")
    await a.devices.stream_opened("alice", "alice-1")
    await asyncio.sleep(2 * COALESCE_MS / 1000)
    seen = await last_seq(b, "bob-1")
    # Changes applied on both cores within one window.
    await a.presence.publish("alice", "alice-1", Status.AWAY, "")
    await b.presence.publish("alice", "alice-1", Status.BUSY, "")
    await a.presence.publish("alice", "alice-1", Status.DO_NOT_DISTURB, "")
    await b.presence.publish("alice", "alice-1", Status.AWAY, "back soon")
    await asyncio.sleep(3 * COALESCE_MS / 1000)
    heard = presence_of(await b.events.read("bob-1", seen), "alice")
    # The first change at once, the last at the window's end; nothing twice.
    assert [(p.status, p.note) for p in heard] == [
        (presence_pb2.Presence.AWAY, ""),
        (presence_pb2.Presence.AWAY, "back soon"),
    ]


async def test_a_stopping_owner_tells_the_change_it_held(cluster: Cluster) -> None:
    a = await cluster.core("core-a", stopped_by_test=True)
    try:
        b = await cluster.core("core-b")
        assert a.presence is not None
        for name in ("alice", "bob"):
            await add_subscriber(a, name)
        await b.events.open("bob-1", "bob")
        await b.devices.stream_opened("bob", "bob-1")
        await a.devices.stream_opened("alice", "alice-1")
        await asyncio.sleep(2 * COALESCE_MS / 1000)
        seen = await last_seq(b, "bob-1")
        await a.presence.publish("alice", "alice-1", Status.AWAY, "")
        # Held for the window's end, which core A does not live to see.
        await a.presence.publish("alice", "alice-1", Status.BUSY, "")
    finally:
        await a.stop(0.2)

    async def heard_busy() -> bool:
        heard = presence_of(await b.events.read("bob-1", seen), "alice")
        return [p.status for p in heard] == [presence_pb2.Presence.AWAY, presence_pb2.Presence.BUSY]

    await eventually(heard_busy, "the change held by the stopped core was never told")


KILLABLE = """
import asyncio, json, sys
from pathlib import Path
from core.server import build_core
from tests.support.core import test_config

async def main() -> None:
    data_dir, env, username, session = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    core = await build_core(test_config(Path(data_dir), env), migrate=False)
    await core.devices.stream_opened(username, session)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_cores_devices_are_lost_once_after_their_grace(cluster: Cluster) -> None:
    b = await cluster.core("core-b")
    for name in ("alice", "bob"):
        await add_subscriber(b, name)
    lost: list[tuple[str, str]] = []

    async def count(username: str, session_id: str) -> None:
        lost.append((username, session_id))

    b.devices.on_lost(count)
    await b.events.open("bob-1", "bob")
    await b.devices.stream_opened("bob", "bob-1")
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
        assert await status(b, "alice") is Status.AVAILABLE

        async def online() -> bool:
            heard = presence_of(await b.events.read("bob-1", 0), "alice")
            return any(p.status == presence_pb2.Presence.AVAILABLE for p in heard)

        # The events of alice's arrival are in: what comes after is her loss.
        await eventually(online, "bob never heard that alice came online")
        seen = await last_seq(b, "bob-1")
        child.send_signal(signal.SIGKILL)
        await child.wait()

        async def offline() -> bool:
            heard = presence_of(await b.events.read("bob-1", seen), "alice")
            return any(p.status == presence_pb2.Presence.OFFLINE for p in heard)

        await eventually(offline, "bob never heard that alice went offline")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    # Still in its grace period for a while after the kill: no earlier than that.
    await asyncio.sleep(1.0)
    assert lost == [("alice", "alice-1")]
    heard = presence_of(await b.events.read("bob-1", seen), "alice")
    assert [p.status for p in heard] == [presence_pb2.Presence.OFFLINE]
    assert await status(b, "alice") is Status.OFFLINE
