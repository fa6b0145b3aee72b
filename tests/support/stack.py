"""The whole front door for end-to-end tests: a real core and edge in this
process and a real Envoy in front of them, on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli import envoy
from core.clock import SYSTEM_CLOCK, Clock
from core.server import Core, build_core
from edges.wapi.server import Edge, start_edge
from tests.support.core import test_config
from tests.support.server import free_port
from tests.support.system import missing
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


@dataclass
class Stack:
    core: Core
    edge: Edge
    port: int  # Envoy's front door
    admin_port: int = 0  # Envoy's admin interface (its /stats/prometheus)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wapi"


def require_envoy() -> str:
    """The Envoy binary (see system.missing), and the descriptor set it transcodes with."""
    try:
        binary = envoy.envoy_binary()
    except envoy.EnvoyError as error:
        missing(f"Envoy is not available: {error}")
    if not (ROOT / "build" / "wac.pb").is_file():
        pytest.fail("build/wac.pb is missing: run make setup first")
    return binary


@asynccontextmanager
async def front_door(
    core_port: int,
    edge: Edge,
    directory: Path,
    listen: int | None = None,
    gateway_ws: str | None = None,
    otlp_endpoint: str = "",
    admin: int | None = None,
    janus_ws: str | None = None,
) -> AsyncIterator[int]:
    """A real Envoy in front of a core and an edge; yields its listening port
    (``listen``, when the edge was told it as its [envoy] listen). /sip goes
    to ``gateway_ws`` (host:port of a test's Kamailio), else to the default.

    Its config and log are written in ``directory``; a failure to start
    shows the log."""
    require_envoy()
    listen, admin = listen or free_port(), admin or free_port()
    config = directory / "envoy.yaml"
    config.write_text(
        envoy.render_config(
            listen_port=listen,
            core_address=f"127.0.0.1:{core_port}",
            edge_address=f"127.0.0.1:{edge.ws_port}",
            edge_http_address=f"127.0.0.1:{edge.http_port}",
            **({"gateway_ws_address": gateway_ws} if gateway_ws else {}),
            **({"janus_ws_address": janus_ws} if janus_ws else {}),
            admin_port=admin,
            # The edge's own hop key, which the core it talks to trusts.
            hop_key=edge.client.hop_key,
            otlp_endpoint=otlp_endpoint,
        )
    )
    log = directory / "envoy.log"
    process = spawn(envoy.envoy_command(config, log_level="warning", concurrency=1), log)
    try:
        try:
            await asyncio.to_thread(envoy.wait_until_live, process, admin, timeout=seconds(6))
        except envoy.EnvoyError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
        yield listen
    finally:
        await asyncio.to_thread(envoy.stop_envoy, process, grace=seconds())


@asynccontextmanager
async def running_stack(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    listen: int | None = None,
    gateway_ws: str | None = None,
    janus_ws: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[Stack]:
    """Core (on ``clock``), edge and Envoy (on ``listen`` if given, routing /sip to
    ``gateway_ws`` if given); everything is stopped on exit, even on failure."""
    require_envoy()
    core = await build_core(test_config(data_dir, env), clock=clock)
    # Chosen first: the edge admits browsers from the front door's origin.
    listen = listen or free_port()
    edge_env = {
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{listen}",
        "WAC_EDGE_LISTEN": "127.0.0.1:0",
        "WAC_EDGE_HTTP_LISTEN": "127.0.0.1:0",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core.port}",
        **(env or {}),
    }
    edge: Edge | None = None
    try:
        edge = await start_edge(test_config(data_dir, edge_env))
        # Envoy's tracer follows the core's and the edge's [tracing] as under `wac run`.
        otlp = (env or {}).get("WAC_TRACING_OTLP_ENDPOINT", "")
        admin = free_port()
        async with front_door(core.port, edge, data_dir, listen, gateway_ws, otlp, admin, janus_ws) as port:
            yield Stack(core=core, edge=edge, port=port, admin_port=admin)
    finally:
        if edge is not None:
            await edge.stop()
        await core.stop(0.2)
