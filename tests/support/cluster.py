"""The same scenarios on two deployments (issue 17, Scale-out).

``deployment`` is parametrized: "embedded" is one core and one edge in this
process, built as the WAPI tests build them; "cluster" is two cores on one
PostgreSQL database and one Redis, each with its own edge, as `wac cluster`
configures its nodes (cli/cluster.py) but without Envoy in front, so that a
test decides which core and edge each client reaches.

A test opens WAPI clients "on side 1" or "on side 2": on the cluster side 1
is edge 1 in front of core A and side 2 is edge 2 in front of core B; on the
embedded node both sides are the one edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from cli.cluster import provision_hop_key
from core.db.migrate import upgrade
from core.server import Core, build_core
from edges.wapi.server import Edge, start_edge
from settings.config import Config
from tests.support.core import add_subscriber, api_key, test_config
from tests.support.timing import seconds
from tests.wapi.conftest import edge_config
from tests.wapi.support import WapiClient, wapi

Side = Literal[1, 2]

# Short enough that "after the grace period" is waited for within a test's
# timeouts; the same on both deployments.
GRACE_PERIOD = 1.0
SHARED = {"WAC_PRESENCE_GRACE_PERIOD": str(GRACE_PERIOD)}
# Ownership moves within a few seconds of a node's death, as the issue asks.
CLUSTER = {"WAC_CLUSTER_LEASE_SECONDS": "2", "WAC_CLUSTER_HEARTBEAT_SECONDS": "0.5"}


@dataclass(frozen=True)
class Deployment:
    """Cores and the edges in front of them: ``edges[n - 1]`` is side n."""

    name: str
    cores: tuple[Core, ...]
    edges: tuple[Edge, Edge]

    def core(self, side: Side) -> Core:
        """The core behind ``side``'s edge."""
        return self.cores[(side - 1) % len(self.cores)]

    def client(self, side: Side, token: str | None = None) -> AbstractAsyncContextManager[WapiClient]:
        """A WAPI WebSocket on ``side``'s edge, bound to ``token`` if given."""
        return wapi(self.edges[side - 1], token)

    async def subscriber(self, username: str, **fields: Any) -> None:
        await add_subscriber(self.cores[0], username, **fields)

    async def api_key(self, name: str, *scopes: str) -> str:
        return await api_key(self.cores[0], name, *scopes)

    async def online(self, username: str, *session_ids: str) -> None:
        """Wait until every core counts these devices of ``username`` online:
        a call offers only the devices that are, when it is created."""
        deadline = asyncio.get_running_loop().time() + seconds()
        for core in self.cores:
            while not set(session_ids) <= set(await core.devices.online_devices(username)):
                assert asyncio.get_running_loop().time() < deadline, f"{self.name}: {username} not online in time"
                await asyncio.sleep(0.02)


async def embedded(stack: AsyncExitStack, tmp_path: Path, env: Mapping[str, str] | None = None) -> Deployment:
    data_dir = tmp_path / "data"
    core = await build_core(test_config(data_dir, {**SHARED, **(env or {})}))
    stack.push_async_callback(core.stop, 0.2)
    edge = await start_edge(edge_config(data_dir, core.port))
    stack.push_async_callback(edge.stop)
    return Deployment("embedded", (core,), (edge, edge))


async def cluster(
    stack: AsyncExitStack, tmp_path: Path, postgres_url: str, redis_url: str, env: Mapping[str, str] | None = None
) -> Deployment:
    shared = {
        **SHARED,
        **(env or {}),
        **CLUSTER,
        "WAC_CORE_DATABASE_URL": postgres_url,
        "WAC_CLUSTER_REDIS_URL": redis_url,
        # One per machine: each core would bind the gateway's ports (as in wac cluster).
        "WAC_GATEWAY_ENABLED": "false",
    }
    # Once, before any core: two cores migrating a new database at once race.
    await asyncio.to_thread(upgrade, postgres_url)
    # One hop key for every node: a core finding none would make its own and
    # end the other's, cutting the other edge off.
    (tmp_path / "cluster").mkdir()
    hop_key = await provision_hop_key(test_config(tmp_path / "cluster", shared), tmp_path / "cluster" / "hop.key")
    shared["WAC_CORE_HOP_KEY"] = hop_key

    def node(name: str, env: Mapping[str, str] | None = None) -> Config:
        return test_config(tmp_path / name, {**shared, "WAC_CLUSTER_NODE_ID": name, **(env or {})})

    cores = []
    for name in ("core-a", "core-b"):
        core = await build_core(node(name), migrate=False)
        stack.push_async_callback(core.stop, 0.2)
        cores.append(core)
    edges = []
    for name, core in zip(("edge-1", "edge-2"), cores, strict=True):
        listen = {
            "WAC_EDGE_LISTEN": "127.0.0.1:0",
            "WAC_EDGE_HTTP_LISTEN": "127.0.0.1:0",
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core.port}",
        }
        edge = await start_edge(node(name, listen))
        stack.push_async_callback(edge.stop)
        edges.append(edge)
    return Deployment("cluster", tuple(cores), (edges[0], edges[1]))


@pytest.fixture(params=["embedded", "cluster"])
async def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployment]:
    """The test's deployment, stopped (edges, then cores) at its end."""
    async with open_deployment(request, tmp_path) as opened:
        yield opened


@asynccontextmanager
async def open_deployment(
    request: pytest.FixtureRequest, tmp_path: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Deployment]:
    """``request.param``'s deployment ("embedded" or "cluster") with ``env``
    on every node, stopped (edges, then cores) when the block ends."""
    async with AsyncExitStack() as stack:
        if request.param == "embedded":
            yield await embedded(stack, tmp_path, env)
        else:
            # Asked for here only: the embedded variant needs neither server.
            postgres_url = request.getfixturevalue("postgres_url")
            redis_url = request.getfixturevalue("redis_url")
            yield await cluster(stack, tmp_path, postgres_url, redis_url, env)
