"""A fresh directory database per test: SQLite in a temp dir, and an empty
database of the session's PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import core.directory.tables  # noqa: F401  (registers the tables on the metadata)
from core.db.engine import create_engine
from core.db.metadata import metadata
from settings.config import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    async with _fresh(url) as engine:
        yield engine


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """SQLite only: for what is specific to it (its query plans)."""
    async with _fresh(sqlite_url(tmp_path)) as engine:
        yield engine


@asynccontextmanager
async def _fresh(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()
