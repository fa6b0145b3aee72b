"""Fixtures for SAPI: one stack per test (it starts in a fraction of a
second), a factory of HTTP clients each with its own API key, and a gRPC
channel straight to the core for what SAPI does not offer (Login, calls)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import httpx
import pytest

from tests.sapi.support import sapi_client, sapi_stack
from tests.support.core import api_key
from tests.support.stack import Stack

Sapi = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with sapi_stack(tmp_path) as running:
        yield running


@pytest.fixture
async def sapi(stack: Stack) -> AsyncIterator[Sapi]:
    """``await sapi("scope", ...)``: an HTTP client on Envoy whose API key has those scopes."""
    names = itertools.count(1)
    async with AsyncExitStack() as clients:

        async def open_client(*scopes: str) -> httpx.AsyncClient:
            key = await api_key(stack.core, f"key-{next(names)}", *scopes)
            return await clients.enter_async_context(sapi_client(stack, key))

        yield open_client


@pytest.fixture
async def anonymous(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on Envoy without credentials."""
    async with sapi_client(stack) as client:
        yield client


@pytest.fixture
async def core_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """gRPC straight to the core, bypassing Envoy."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.core.port}") as channel:
        yield channel
