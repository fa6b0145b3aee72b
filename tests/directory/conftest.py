"""A fresh directory database per test: SQLite in a temp dir, and also
PostgreSQL when WAC_TEST_POSTGRES_URL names an empty database to use."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import core.directory.tables  # noqa: F401  (registers the tables on the metadata)
from core.db.engine import create_engine, sqlite_url
from core.db.metadata import metadata

_BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("WAC_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=_BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else os.environ["WAC_TEST_POSTGRES_URL"]
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()
