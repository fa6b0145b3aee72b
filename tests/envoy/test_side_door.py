"""The front door of `wac cluster` before two stand-in cores: the side door
the edges use passes their calls to the cores in turn with the client's
address and the hop key untouched, and a core that stops is taken out by
the health checks."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cli import envoy
from tests.envoy.conftest import free_ports
from tests.envoy.stubs import StubIdentity
from tests.support.timing import TIMEOUT, seconds
from wac.v1 import identity_pb2, identity_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StubCore:
    port: int
    identity: StubIdentity
    server: grpc.aio.Server


@dataclass(frozen=True)
class Door:
    admin: int
    side: int
    cores: tuple[int, int]


@pytest.fixture(scope="module")
def door(envoy_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    listen, admin, side, core_a, core_b, edge_a, edge_b = free_ports(7)
    work = tmp_path_factory.mktemp("side-door")
    config = work / "envoy.yaml"
    config.write_text(
        envoy.render_config(
            listen_port=listen,
            admin_port=admin,
            core_address=[f"127.0.0.1:{core_a}", f"127.0.0.1:{core_b}"],
            # No edge runs: their health checks fail, which must not matter here.
            edge_address=[f"127.0.0.1:{edge_a}", f"127.0.0.1:{edge_b}"],
            edge_http_address=[f"127.0.0.1:{edge_a}", f"127.0.0.1:{edge_b}"],
            hop_key="the-hop-key",
            hop_listen_port=side,
        )
    )
    log = work / "envoy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            envoy.envoy_command(config, log_level="warning", concurrency=1), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        try:
            envoy.wait_until_live(process, admin, timeout=6 * TIMEOUT)
        except envoy.EnvoyError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
        yield Door(admin, side, (core_a, core_b))
    finally:
        envoy.stop_envoy(process, grace=TIMEOUT)


async def start_stub(port: int) -> StubCore:
    identity = StubIdentity()
    server = grpc.aio.server()
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(identity, server)
    checks = health.aio.HealthServicer()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return StubCore(port, identity, server)


@pytest.fixture
async def cores(door: Door) -> AsyncIterator[list[StubCore]]:
    stubs = [await start_stub(port) for port in door.cores]
    try:
        yield stubs
    finally:
        for stub in stubs:
            await stub.server.stop(grace=None)


async def jwks(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    await stub.GetJwks(identity_pb2.GetJwksRequest(), metadata=metadata, timeout=seconds())


async def until(condition_met: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition_met():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def served_by_both(channel: grpc.aio.Channel, cores: list[StubCore]) -> bool:
    """One call through the side door; True once each core has served one.
    The health checks pass within 2 s, and Envoy's workers hear of it up to
    a second later (its update merge window)."""
    try:
        await jwks(channel)
    except grpc.aio.AioRpcError:
        return False
    return all(stub.identity.seen for stub in cores)


async def test_the_side_door_takes_turns_and_forwards_the_address_and_hop_key(
    door: Door, cores: list[StubCore]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{door.side}") as channel:
        await until(lambda: served_by_both(channel, cores), "both cores served through the side door", seconds(2))
        for stub in cores:
            stub.identity.seen.clear()
        metadata = (("x-forwarded-for", "203.0.113.7"), ("x-wac-hop", "an-edge-hop-key"))
        for _ in range(4):
            await jwks(channel, metadata)
    # One connection, round robin: strictly in turn.
    assert [len(stub.identity.seen) for stub in cores] == [2, 2]
    for stub in cores:
        for seen in stub.identity.seen:
            assert seen["x-forwarded-for"] == "203.0.113.7"
            assert seen["x-wac-hop"] == "an-edge-hop-key"


async def test_a_stopped_core_fails_no_call_and_is_taken_out_by_the_health_checks(
    door: Door, cores: list[StubCore]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{door.side}") as channel:
        await until(lambda: served_by_both(channel, cores), "both cores served through the side door", seconds(2))
        gone, left = cores
        await gone.server.stop(grace=None)
        served = len(left.identity.seen)
        # Before the health checks take it out (two failed checks 2 s
        # apart), a call refused by the stopped core is retried on the other:
        # none fails.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        calls = 0
        while loop.time() < deadline:
            await jwks(channel)
            calls += 1
            await asyncio.sleep(0.05)
        assert len(left.identity.seen) - served == calls
    _status, clusters = envoy.admin_request(door.admin, "/clusters")
    assert f"wac_core::127.0.0.1:{gone.port}::health_flags::/failed_active_hc" in clusters
