"""Fixtures for the browser suite: the SDK bundle (built once if missing or
stale), Chromium, and per test a running stack with alice and bob."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from playwright.async_api import Playwright, async_playwright

from tests.browser.support import Demo, chromium_path, ensure_sdk_bundle, open_demo


@pytest.fixture(scope="session", autouse=True)
def sdk_bundle() -> None:
    chromium_path()  # skips, or fails under CI=true, before anything starts
    ensure_sdk_bundle()


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as running:
        yield running


@pytest.fixture
async def demo(playwright: Playwright, tmp_path: Path) -> AsyncIterator[Demo]:
    async with open_demo(playwright, tmp_path / "data") as running:
        yield running


@pytest.fixture
def demo_with(
    playwright: Playwright, tmp_path: Path
) -> Callable[[Mapping[str, str]], AbstractAsyncContextManager[Demo]]:
    """A demo with configuration overrides: ``async with demo_with({...}) as demo``."""
    return lambda env: open_demo(playwright, tmp_path / "data", env)
