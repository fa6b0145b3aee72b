"""Connector tests: a fresh SQLite directory, and a private slapd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import core.directory.tables  # noqa: F401  (registers the tables on the metadata)
from core.db.engine import create_engine
from core.db.metadata import metadata
from core.directory.store import DirectoryStore
from settings.config import sqlite_url
from tests.support.slapd import slapd  # noqa: F401  (the fixture)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DirectoryStore]:
    engine = create_engine(sqlite_url(tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield DirectoryStore(engine)
    finally:
        await engine.dispose()
