"""Ownership of live calls in a cluster: two cores in this process on one
PostgreSQL database and one Redis, each reached by its own channel, so a
test decides which core each request reaches.

A core is "killed" by stopping it with its leases and its announcement left
in Redis, as a kill -9 leaves them: the other core takes its calls over only
once they lapse (lease_seconds 1, heartbeat 0.2).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import pytest

from core.calls.forward import advertised
from core.cluster import redis_client
from core.cluster.leases import Lease
from core.cluster.redis_leases import RedisLeases
from core.cluster.redis_owners import RedisCallOwners
from core.db.migrate import upgrade
from core.server import Core, build_core
from settings.fields import ConfigError
from tests.calls.support import PEOPLE, Device, eventually, fails
from tests.support.core import add_subscriber, login
from tests.support.core import test_config as core_config
from tests.support.timing import seconds
from wac.v1 import calls_pb2

LEASE = 1.0
HEARTBEAT = 0.2
# How long a dead core's calls wait for another to take them over, at most.
TAKEOVER = LEASE + 3 * HEARTBEAT


@dataclass
class Cluster:
    tmp_path: Path
    env: Mapping[str, str]
    stack: AsyncExitStack
    cores: dict[str, Core] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)

    async def start(self, name: str) -> Core:
        config = core_config(self.tmp_path / name, {**self.env, "WAC_CLUSTER_NODE_ID": name})
        core = await build_core(config, migrate=False)
        self.cores[name] = core
        self.channels[name] = grpc.aio.insecure_channel(f"127.0.0.1:{core.port}")
        return core

    async def device(self, username: str, on: str) -> Device:
        """A logged-in device of ``username`` with its stream open on core ``on``."""
        channel, core = self.channels[on], self.cores[on]
        session = await login(channel, username)
        device = Device(username, session.session_id, session.access_token, channel, core)
        await device.connect()
        self.devices.append(device)
        return device

    async def kill(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Stop core ``name`` leaving its leases and its announcement to lapse."""
        core = self.cores.pop(name)
        for device in self.devices:
            if device.core is core:
                await device.disconnect(wait=False)
        with monkeypatch.context() as patched:
            patched.setattr(RedisLeases, "release", _keep)
            patched.setattr(RedisCallOwners, "leave", _stay)
            await core.stop(0)
        await self.channels.pop(name).close()

    async def close(self) -> None:
        for device in self.devices:
            await device.disconnect(wait=False)
        for core in self.cores.values():
            await core.stop(0.2)
        for channel in self.channels.values():
            await channel.close()


async def _keep(self: RedisLeases, lease: Lease) -> None:
    """A killed core releases nothing."""


async def _stay(self: RedisCallOwners) -> None:
    """A killed core does not say it leaves."""


@asynccontextmanager
async def open_cluster(
    tmp_path: Path, postgres_url: str, redis_url: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    full = {
        "WAC_CORE_DATABASE_URL": postgres_url,
        "WAC_CLUSTER_REDIS_URL": redis_url,
        "WAC_CLUSTER_LEASE_SECONDS": str(LEASE),
        "WAC_CLUSTER_HEARTBEAT_SECONDS": str(HEARTBEAT),
        # One per machine: each core would bind the gateway's ports.
        "WAC_GATEWAY_ENABLED": "false",
        # Long: a killed core's devices stay online while a test looks at its calls.
        "WAC_PRESENCE_GRACE_PERIOD": "30",
        **(env or {}),
    }
    await asyncio.to_thread(upgrade, postgres_url)
    async with AsyncExitStack() as stack:
        cluster = Cluster(tmp_path, full, stack)
        stack.push_async_callback(cluster.close)
        await cluster.start("core-a")
        await cluster.start("core-b")
        for username in ("alice", "bob", "carol"):
            await add_subscriber(cluster.cores["core-a"], username, display_name=PEOPLE[username])
        yield cluster


@pytest.fixture
async def cluster(tmp_path: Path, postgres_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    async with open_cluster(tmp_path, postgres_url, redis_url) as running:
        yield running


async def owner(cluster: Cluster, call_id: str) -> str | None:
    core = next(iter(cluster.cores.values()))
    return await core.leases.owner(f"call:{call_id}")


async def test_a_call_created_on_one_core_is_answered_and_hung_up_through_the_other(cluster: Cluster) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    call = await alice.create("bob")
    assert await owner(cluster, call.call_id) == "core-a"
    (invite,) = await bob.expect("call_invited")
    assert invite.call.call_id == call.call_id
    await alice.expect("call_ringing")

    answered = await bob.answer(call.call_id)  # through core B, applied by core A
    assert answered.state == calls_pb2.Call.ACTIVE
    await alice.expect("call_answered")
    await bob.ice(call.call_id)
    await alice.expect("ice_candidate")
    ended = await bob.hangup(call.call_id)
    assert ended.state == calls_pb2.Call.ENDED
    await alice.expect("call_ended")
    await bob.quiet()
    assert await owner(cluster, call.call_id) is None  # released with the call


async def test_a_refusal_by_the_owner_reaches_the_client_unchanged(cluster: Cluster) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    carol = await cluster.device("carol", on="core-b")
    call = await alice.create("bob")
    # Not a party: the owner (core A) refuses, with its status details.
    error = await fails(grpc.StatusCode.PERMISSION_DENIED, carol.hangup(call.call_id), "not a participant")
    assert any(key == "grpc-status-details-bin" for key, _ in error.trailing_metadata() or ())
    await bob.answer(call.call_id)
    await fails(grpc.StatusCode.FAILED_PRECONDITION, bob.answer(call.call_id))


async def test_a_ringing_call_of_a_killed_core_still_times_out(
    tmp_path: Path, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring_timeout = TAKEOVER + 1.0
    async with open_cluster(
        tmp_path, postgres_url, redis_url, {"WAC_CALLS_RING_TIMEOUT": str(ring_timeout)}
    ) as cluster:
        alice = await cluster.device("alice", on="core-a")
        bob = await cluster.device("bob", on="core-b")
        started = asyncio.get_running_loop().time()
        call = await alice.create("bob")
        await bob.expect("call_invited")
        await cluster.kill("core-a", monkeypatch)

        await eventually(partial(_owned_by, cluster, call.call_id, "core-b"), TAKEOVER + seconds(0.2))
        (ended,) = await bob.expect("call_ended")
        took = asyncio.get_running_loop().time() - started
        assert ended.call.end_reason == calls_pb2.Call.NO_ANSWER
        assert ring_timeout - 0.1 <= took <= ring_timeout + HEARTBEAT + 1.0
        # Released once the call's end is carried out, just after its events.
        await eventually(partial(_owned_by, cluster, call.call_id, None))


async def test_an_active_call_of_a_killed_core_can_be_hung_up(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await bob.answer(call.call_id)
    await alice.expect("call_ringing", "call_answered")
    await cluster.kill("core-a", monkeypatch)
    # Alice's device comes back through the surviving core.
    await alice.connect(cluster.channels["core-b"], cluster.cores["core-b"])

    await eventually(partial(_owned_by, cluster, call.call_id, "core-b"), TAKEOVER + seconds(0.2))
    assert (await bob.get(call.call_id)).state == calls_pb2.Call.ACTIVE
    ended = await bob.hangup(call.call_id)
    assert ended.state == calls_pb2.Call.ENDED
    # The new stream may replay what the event log kept of the call first.
    while (await alice.next()).WhichOneof("payload") != "call_ended":
        pass


async def test_an_input_adopts_a_call_whose_owner_is_gone(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await cluster.kill("core-a", monkeypatch)
    # Before the lease lapses the owner cannot be reached: the client retries.
    while True:
        try:
            answered = await bob.answer(call.call_id)
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            await asyncio.sleep(HEARTBEAT / 2)
    assert answered.state == calls_pb2.Call.ACTIVE
    assert await owner(cluster, call.call_id) == "core-b"


async def test_a_device_lost_on_another_core_reaches_the_calls_owner(cluster: Cluster) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")
    # The registry tells core B alone; core A owns the call.
    await cluster.cores["core-b"].devices.ended("bob", bob.session_id)
    (ended,) = await alice.expect("call_ended")
    assert ended.call.call_id == call.call_id
    assert (await alice.get(call.call_id)).state == calls_pb2.Call.ENDED


async def test_the_bounds_on_creation_hold_across_cores(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    env = {"WAC_CALLS_MAX_CALLS_PER_CALLER": "1", "WAC_CALLS_MAX_RINGING_PER_CALLEE": "1"}
    async with open_cluster(tmp_path, postgres_url, redis_url, env) as cluster:
        alice = await cluster.device("alice", on="core-a")
        alice_b = await cluster.device("alice", on="core-b")
        await cluster.device("bob", on="core-b")
        carol = await cluster.device("carol", on="core-b")
        call = await alice.create("bob")
        await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice_b.create("carol"), "calls ringing or active")
        await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, carol.create("bob"))
        await alice.hangup(call.call_id)
        # Freed on every core.
        second = await alice_b.create("carol")
        assert second.state == calls_pb2.Call.RINGING


def test_the_advertised_address_is_never_a_wildcard() -> None:
    assert advertised("", "127.0.0.1:0")(50051) == "127.0.0.1:50051"
    assert advertised("", "[::1]:0")(7) == "[::1]:7"
    assert advertised("core-a.internal:50051", "0.0.0.0:50051")(50051) == "core-a.internal:50051"
    for wildcard in ("0.0.0.0:50051", "[::]:50051"):
        with pytest.raises(ConfigError, match="advertise"):
            advertised("", wildcard)


async def _owned_by(cluster: Cluster, call_id: str, node: str | None) -> bool:
    return await owner(cluster, call_id) == node


async def test_a_caller_whose_stream_opens_on_another_core_may_place_a_call(cluster: Cluster) -> None:
    await cluster.device("bob", on="core-b")
    session = await login(cluster.channels["core-a"], "alice")
    alice = Device(
        "alice", session.session_id, session.access_token, cluster.channels["core-b"], cluster.cores["core-b"]
    )
    cluster.devices.append(alice)
    # The stream opens on core B while the call is placed through core A,
    # whose registry is not the one told the device came online.
    await alice.connect(wait=False)
    alice.channel = cluster.channels["core-a"]
    call = await alice.create("bob")
    assert call.state == calls_pb2.Call.RINGING


async def test_a_call_whose_lease_is_lost_under_a_live_owner_is_adopted(cluster: Cluster, redis_url: str) -> None:
    alice = await cluster.device("alice", on="core-a")
    bob = await cluster.device("bob", on="core-b")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")
    # As if core A's renewals had not reached Redis in time.
    client = redis_client.connect(redis_url)
    try:
        await client.delete(f"wac:lease:call:{call.call_id}")
    finally:
        await redis_client.close(client)
    # Core A lets it go at its next renewal; a core adopts the orphan.
    await eventually(partial(_owned, cluster, call.call_id), TAKEOVER + seconds(0.2))
    await bob.answer(call.call_id)
    await alice.expect("call_answered")


async def _owned(cluster: Cluster, call_id: str) -> bool:
    return await owner(cluster, call_id) is not None
