"""Units of database work that cost one hop, for the hot paths.

Through aiosqlite every statement is four round trips between the event
loop and the connection's thread (cursor, execute, fetch, close), plus one
for the commit and one for the pool's reset, and each round trip hands the
GIL over twice. On a call setup that was a millisecond of the core's CPU,
more than the SQL itself. A unit of work is a plain function over a
synchronous connection, run in one transaction:

- embedded (SQLite): a write runs in a thread of its own, one hop for the
  whole unit; one thread, so this core's writers queue in memory instead of
  on SQLite's file lock. The units that queued while the thread was busy
  are run together in one transaction (group commit): a burst of logins
  and devices coming online paid a BEGIN, a COMMIT, a pool checkout and a
  hop each, more than the statements themselves. A read runs right on the event loop: in WAL mode a
  reader never waits for a writer, and the units that read are point
  lookups of a few rows, cheaper than the thread hop itself (handing a
  job to a waiting thread costs a GIL handover, 100 µs and more under load).
- distributed (PostgreSQL): through the async engine's ``run_sync``;
  asyncpg is natively asynchronous and needs no thread. A read runs on a
  read-only connection outside a transaction: one round trip per statement.

Everything else keeps using the async engine directly: this is for the
statements that run on every call and every presence change.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.db.engine import set_sqlite_pragmas, sync_url, time_statements, watch_closed

T = TypeVar("T")

# The read-only pool of a PostgreSQL unit-of-work runner, beside the
# engine's own (core/db/engine.py, 30 at most): reads are short, one
# statement each. A core opens 40 connections at most; PostgreSQL's
# default max_connections (100) serves two cores (README, "Production").
READ_POOL = 5
READ_OVERFLOW = 5
# Units of work committed together at most: bounds how long the first of
# them waits for the last.
GROUP_COMMIT = 64


class Work(Protocol):
    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a connection; nothing it does is committed."""

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction, committed when it returns. ``fn``
        touches nothing but the connection: it may be run twice (on SQLite,
        again alone when a unit committed with it failed)."""

    def close(self) -> None:
        """Release connections and threads; later units fail."""


@dataclass(eq=False, slots=True)
class _Unit(Generic[T]):
    """A write waiting for SQLite's writer thread, and what came of it."""

    fn: Callable[[Connection], T]
    future: asyncio.Future[T]
    # Set on the loop when the caller stopped waiting: a unit not yet
    # started is then skipped, as a cancelled executor job is.
    abandoned: bool = False
    outcome: tuple[bool, Any] = field(default=(False, None))


class SqliteWork:
    """SQLite: units run on a synchronous engine, writes in a thread of their
    own, those that queued meanwhile in one transaction."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_sync_engine(
            sync_url(url),
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=2,  # the loop's reads and the writer thread
            max_overflow=0,
        )
        event.listen(self._engine, "connect", set_sqlite_pragmas)
        time_statements(self._engine)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="wac-db-write")
        # Units waiting for the writer, and whether it is taking them (then
        # a new unit only joins the queue: no job, no wake-up of the thread).
        self._lock = threading.Lock()
        self._queued: list[_Unit[Any]] = []
        self._draining = False

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return self._read(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        unit: _Unit[T] = _Unit(fn, loop.create_future())
        with self._lock:
            self._queued.append(unit)
            start, self._draining = not self._draining, True
        if start:
            try:
                self._writer.submit(self._drain)
            except BaseException:
                with self._lock:
                    self._queued.remove(unit)
                    self._draining = False
                raise
        try:
            return await unit.future
        except asyncio.CancelledError:
            unit.abandoned = True
            raise

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self._engine.connect() as conn:
            return fn(conn)

    def _drain(self) -> None:
        """The writer thread: run what is queued, a group at a time, until
        nothing is."""
        while True:
            with self._lock:
                group = self._queued[:GROUP_COMMIT]
                del self._queued[:GROUP_COMMIT]
                if not group:
                    self._draining = False
                    return
            group = [unit for unit in group if not unit.abandoned]
            if group:
                self._commit(group)
                _settle_soon(group)

    def _commit(self, group: list[_Unit[Any]]) -> None:
        try:
            with self._engine.begin() as conn:
                for unit in group:
                    unit.outcome = (True, unit.fn(conn))
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, OperationalError):
                # Alone, or the database failing (locked, unreadable), not a unit.
                for unit in group:
                    unit.outcome = (False, exc)
                return
            # One unit failed and took the others' work with it: each
            # again, alone, so that it alone fails.
            for unit in group:
                self._commit([unit])

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._engine.dispose()


def _settle_soon(group: list[_Unit[Any]]) -> None:
    """Hand the group's outcomes to their loop: one wake-up per group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Unit[Any]]] = {}
    for unit in group:
        by_loop.setdefault(unit.future.get_loop(), []).append(unit)
    for loop, units in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
            loop.call_soon_threadsafe(_settle, units)


def _settle(units: list[_Unit[Any]]) -> None:
    for unit in units:
        if unit.future.done():
            continue  # its caller was cancelled meanwhile
        ok, value = unit.outcome
        if ok:
            unit.future.set_result(value)
        else:
            unit.future.set_exception(value)


class AsyncWork:
    """Any other database: units run through the async engine; reads
    through a second, smaller pool of read-only connections outside any
    transaction. In a transaction, each read would cost PostgreSQL a BEGIN
    and a ROLLBACK besides its query: three round trips for one. Under READ
    COMMITTED each statement reads its own snapshot either way, and the
    server refuses a write on these connections."""

    def __init__(self, engine: AsyncEngine) -> None:
        # Weak: this object is the engine's value in _work, keyed weakly by it.
        self._engine = weakref.ref(engine)
        self._reader = watch_closed(
            create_async_engine(
                engine.url,
                pool_size=READ_POOL,
                max_overflow=READ_OVERFLOW,
                pool_pre_ping=False,
                isolation_level="AUTOCOMMIT",
                connect_args={"server_settings": {"default_transaction_read_only": "on"}},
            )
        )
        time_statements(self._reader.sync_engine)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        async with self._reader.connect() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        async with self._live().begin() as conn:
            return await conn.run_sync(fn)

    def _live(self) -> AsyncEngine:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this unit-of-work runner was discarded")
        return engine

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        await self._reader.dispose()


_work: weakref.WeakKeyDictionary[AsyncEngine, Work] = weakref.WeakKeyDictionary()


def work_for(engine: AsyncEngine) -> Work:
    """The unit-of-work runner of ``engine``'s database (one per engine)."""
    work = _work.get(engine)
    if work is None:
        url = engine.url.render_as_string(hide_password=False)
        work = SqliteWork(url) if engine.dialect.name == "sqlite" else AsyncWork(engine)
        _work[engine] = work
    return work


async def dispose(engine: AsyncEngine) -> None:
    """Close ``engine`` and its unit-of-work runner."""
    work = _work.pop(engine, None)
    if isinstance(work, AsyncWork):
        await work.aclose()
    elif work is not None:
        await asyncio.to_thread(work.close)
    await engine.dispose()
