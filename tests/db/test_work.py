"""Units of work (core/db/work.py) on both backends: SQLite's threads and
PostgreSQL's ``run_sync`` must commit, roll back and read alike."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.db.engine import create_engine
from core.db.work import AsyncWork, SqliteWork, Work, dispose, work_for
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


async def test_concurrent_units_fail_alone(work: Work) -> None:
    def add(id_: int) -> Callable[[Connection], int]:
        return lambda conn: conn.execute(insert(notes).values(id=id_, text=str(id_))).rowcount

    def clash(conn: Connection) -> None:
        conn.execute(insert(notes).values(id=100, text="lost"))
        conn.execute(insert(notes).values(id=1, text="clash"))  # 1 is taken by then

    await work.write(add(1))
    results = await asyncio.gather(add_many(work, add, range(2, 6)), work.write(clash), return_exceptions=True)
    assert results[0] == [1, 1, 1, 1] and isinstance(results[1], IntegrityError)
    assert await work.read(lambda conn: conn.execute(select(notes.c.id).order_by(notes.c.id)).scalars().all()) == [
        1,
        2,
        3,
        4,
        5,
    ]


async def add_many(work: Work, add: Callable[[int], Callable[[Connection], int]], ids: Iterable[int]) -> list[int]:
    return list(await asyncio.gather(*(work.write(add(i)) for i in ids)))


async def blocked_writer(work: Work) -> tuple[threading.Event, asyncio.Future[None]]:
    """A unit holding SQLite's writer thread until the event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        release.wait(10)

    holding = asyncio.ensure_future(work.write(hold))
    assert await asyncio.to_thread(started.wait, 10)
    return release, holding


async def test_units_queued_behind_a_busy_writer_commit_together(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    work = work_for(engine)
    assert isinstance(work, SqliteWork)
    commits: list[int] = []
    event.listen(work._engine, "commit", lambda conn: commits.append(1))
    try:
        release, holding = await blocked_writer(work)
        queued = [
            asyncio.ensure_future(work.write(lambda c, i=i: c.execute(insert(notes).values(id=i)))) for i in range(10)
        ]
        await asyncio.sleep(0.05)  # all ten queued behind the held unit
        release.set()
        await asyncio.gather(holding, *queued)
        # The held unit alone, then the ten in one transaction.
        assert len(commits) == 2
        assert await work.read(count) == 10
    finally:
        await dispose(engine)


async def test_a_unit_cancelled_while_queued_never_runs(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    work = work_for(engine)
    try:
        release, holding = await blocked_writer(work)
        cancelled = asyncio.ensure_future(work.write(lambda c: c.execute(insert(notes).values(id=1))))
        kept = asyncio.ensure_future(work.write(lambda c: c.execute(insert(notes).values(id=2))))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled  # its caller has stopped waiting before the writer is free
        release.set()
        await asyncio.gather(holding, kept)
        assert await work.read(lambda conn: conn.execute(select(notes.c.id)).scalars().all()) == [2]
    finally:
        await dispose(engine)
