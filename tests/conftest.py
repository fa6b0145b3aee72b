"""Shared fixtures: a real core per test on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from core.server import Core
from tests.support.core import running_core
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (the fixtures)
from tests.support.redis import redis_server, redis_url  # noqa: F401  (the fixtures)


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    async with running_core(tmp_path / "data") as running:
        yield running


@pytest.fixture
async def channel(core: Core) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as chan:
        yield chan
