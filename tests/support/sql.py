"""Counting the SQL a piece of work runs: what stays in memory must prove it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, event
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.engine import create_engine
from core.db.work import dispose
from settings.config import sqlite_url


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@asynccontextmanager
async def two_cores(
    request: pytest.FixtureRequest, tmp_path: Path, table: Table
) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one database, SQLite or the throwaway PostgreSQL as
    ``request.param`` says, with ``table`` created: two cores sharing it."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engines = (create_engine(url), create_engine(url))
    async with engines[0].begin() as conn:
        await conn.run_sync(table.create)
    try:
        yield engines
    finally:
        for engine in engines:
            await dispose(engine)
