"""A real core and a real edge, each on port 0, per test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.server import Core
from edges.wapi.server import Edge, start_edge
from settings.config import Config
from tests.support.core import add_subscriber, test_config

EdgeFactory = Callable[..., Awaitable[Edge]]


def edge_config(data_dir: Path, core_port: int, **edge: Any) -> Config:
    """The test configuration with [edge] keys overridden by keyword (``rate_burst=5``)."""
    env = {
        "WAC_EDGE_LISTEN": "127.0.0.1:0",
        "WAC_EDGE_HTTP_LISTEN": "127.0.0.1:0",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core_port}",
    }
    env.update({f"WAC_EDGE_{key.upper()}": str(value) for key, value in edge.items()})
    return test_config(data_dir, env)


@pytest.fixture
async def start(core: Core, tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    """Start edges in front of the test's core; all are stopped at the end."""
    edges: list[Edge] = []

    async def make(*, clock: Callable[[], float] = time.monotonic, **edge: Any) -> Edge:
        started = await start_edge(edge_config(tmp_path / "data", core.port, **edge), clock=clock)
        edges.append(started)
        return started

    yield make
    for started in edges:
        await started.stop()


@pytest.fixture
async def edge(start: EdgeFactory) -> Edge:
    return await start()


@pytest.fixture
async def alice(core: Core) -> str:
    await add_subscriber(core, "alice")
    return "alice"


@pytest.fixture
async def bob(core: Core) -> str:
    await add_subscriber(core, "bob")
    return "bob"
