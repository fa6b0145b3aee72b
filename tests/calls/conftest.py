"""Fixtures for the calls suite: a real core with subscribers, per test, on
a fake clock that the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.calls.support import World, open_world
from tests.support.clock import FakeClock


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, clock=FakeClock()) as running:
        yield running


@pytest.fixture
def world_with(
    tmp_path: Path,
) -> Callable[[Mapping[str, str]], AbstractAsyncContextManager[World]]:
    """A world with configuration overrides: ``async with world_with({...}) as world``."""
    return lambda env: open_world(tmp_path, env, clock=FakeClock())
