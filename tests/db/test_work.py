"""Units of work (core/db/work.py) on both backends: SQLite's threads and
PostgreSQL's ``run_sync`` must commit, roll back and read alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.db.engine import create_engine
from core.db.work import AsyncWork, Work, dispose, work_for
from settings.config import sqlite_url

_metadata = MetaData()
notes = Table("work_notes", _metadata, Column("id", Integer, primary_key=True), Column("text", String(50)))


@pytest.fixture(params=["sqlite", "postgresql"])
async def work(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Work]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    try:
        runner = work_for(engine)
        assert work_for(engine) is runner
        # PostgreSQL's units go through the async engine; SQLite's through a runner of its own.
        assert isinstance(runner, AsyncWork) == (request.param == "postgresql")
        yield runner
    finally:
        await dispose(engine)


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(notes)).scalar_one())


async def test_a_write_commits_and_a_read_sees_it(work: Work) -> None:
    def add(conn: Connection) -> int:
        conn.execute(insert(notes).values(id=1, text="one"))
        conn.execute(insert(notes).values(id=2, text="two"))
        return count(conn)

    assert await work.write(add) == 2
    rows = await work.read(lambda conn: conn.execute(select(notes.c.text).order_by(notes.c.id)).scalars().all())
    assert rows == ["one", "two"]


async def test_a_write_that_raises_rolls_back_entirely(work: Work) -> None:
    await work.write(lambda conn: conn.execute(insert(notes).values(id=1, text="kept")))

    def half_done(conn: Connection) -> None:
        conn.execute(insert(notes).values(id=2, text="lost"))
        raise LookupError("changed my mind")

    with pytest.raises(LookupError, match="changed my mind"):
        await work.write(half_done)
    assert await work.read(count) == 1

    # A statement the database refuses (a duplicate key) rolls back the unit too.
    def duplicate(conn: Connection) -> None:
        conn.execute(insert(notes).values(id=3, text="lost too"))
        conn.execute(insert(notes).values(id=1, text="clash"))

    with pytest.raises(IntegrityError):
        await work.write(duplicate)
    assert await work.read(lambda conn: conn.execute(select(notes.c.text)).scalars().all()) == ["kept"]


async def test_a_read_commits_nothing(work: Work) -> None:
    def sneaky(conn: Connection) -> int:
        conn.execute(insert(notes).values(id=1, text="uncommitted"))
        return count(conn)

    if isinstance(work, AsyncWork):
        # PostgreSQL's reads run on read-only connections: the server refuses.
        with pytest.raises(DBAPIError, match="read-only transaction"):
            await work.read(sneaky)
    else:
        # SQLite's run in a transaction that is rolled back.
        assert await work.read(sneaky) == 1
    assert await work.read(count) == 0


async def test_reads_see_what_writes_committed(work: Work) -> None:
    await work.write(lambda conn: conn.execute(insert(notes).values(id=7, text="seen")))
    assert await work.read(lambda conn: conn.execute(select(notes.c.text)).scalars().all()) == ["seen"]
