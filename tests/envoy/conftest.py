"""A real Envoy in front of a stand-in core (grpc.aio) and a stand-in WAPI edge.

The stand-ins implement just enough to see what Envoy does with their
answers; the real core and edge have their own suites. One Envoy serves a
whole module (it takes about a second to start), while the stand-ins start
per test on ports fixed for the module, so a test without the core fixture
sees the core down.

The fixtures are named stub_* so that they never stand in for the real
core of tests/conftest.py by accident.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from websockets.asyncio.server import serve

from cli import envoy
from tests.envoy.stubs import StubIdentity, echo, name_the_path
from tests.support.server import free_port
from tests.support.system import missing
from tests.support.timing import TIMEOUT
from wac.v1 import identity_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """Distinct free ports (tests/support/server.py never hands one out twice in a while)."""
    return [free_port() for _ in range(count)]


@pytest.fixture(scope="session")
def envoy_path() -> str:
    """The Envoy binary; a missing one skips locally but fails under CI=true."""
    try:
        return envoy.envoy_binary()
    except envoy.EnvoyError as error:
        missing(f"Envoy is not available: {error}")


@dataclass(frozen=True)
class Ports:
    """The module's ports, all on 127.0.0.1."""

    listen: int
    admin: int
    core: int
    edge: int


@pytest.fixture(scope="module")
def ports() -> Ports:
    listen, admin, core, edge = free_ports(4)
    return Ports(listen=listen, admin=admin, core=core, edge=edge)


@pytest.fixture(scope="module")
def front_door(envoy_path: str, ports: Ports, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Envoy for the module; yields its base URL and always stops it."""
    descriptor = ROOT / "build" / "wac.pb"
    if not descriptor.is_file():
        pytest.fail(f"{descriptor} is missing: run python tools/gen_proto.py first")
    work = tmp_path_factory.mktemp("envoy")
    config = work / "envoy.yaml"
    config.write_text(
        envoy.render_config(
            listen_host="127.0.0.1",
            listen_port=ports.listen,
            core_address=f"127.0.0.1:{ports.core}",
            edge_address=f"127.0.0.1:{ports.edge}",
            # The stand-in edge answers plain HTTP and WebSockets on one port.
            edge_http_address=f"127.0.0.1:{ports.edge}",
            admin_port=ports.admin,
            descriptor_path=descriptor,
            openapi_path=ROOT / "envoy" / "openapi.json",
        )
    )
    log = work / "envoy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            envoy.envoy_command(config, log_level="warning", concurrency=1),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            envoy.wait_until_live(process, ports.admin, timeout=6 * TIMEOUT)
        except envoy.EnvoyError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
        yield f"http://127.0.0.1:{ports.listen}"
    finally:
        envoy.stop_envoy(process, grace=TIMEOUT)


@pytest.fixture
async def stub_core(ports: Ports) -> AsyncIterator[StubIdentity]:
    """The stand-in core on the module's core port, for one test."""
    identity = StubIdentity()
    server = grpc.aio.server()
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(identity, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{ports.core}")
    await server.start()
    try:
        yield identity
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def stub_edge(ports: Ports) -> AsyncIterator[None]:
    """The stand-in WAPI edge: echoes WebSocket messages, names the path of plain requests."""

    async with serve(echo, "127.0.0.1", ports.edge, process_request=name_the_path):
        yield
