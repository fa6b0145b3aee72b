"""Opening the database: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core import metrics


def sync_url(url: str) -> str:
    """The same database for synchronous tools (Alembic)."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


def set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection's settings (a "connect" event listener)."""
    # WAL lets readers run while one writer commits; NORMAL sync is
    # durable across application crashes, which is what we need.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection the server has closed (it restarted)
    is dropped at checkout, with every connection older than it, and the
    pool opens a fresh one (a "checkout" event listener). asyncpg sees the
    server's close on its socket as it happens, so this costs no round trip,
    unlike a pre-ping."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa.InvalidatePoolError("the server closed this pooled connection")


def watch_closed(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` with ``refuse_closed`` on its pool."""
    event.listen(engine.sync_engine, "checkout", refuse_closed)
    return engine


def time_statements(engine: Engine) -> None:
    """Each statement of ``engine`` timed in wac_core_db_statement_duration_seconds
    (two event listeners: a few microseconds per statement)."""
    observe = metrics.DB_STATEMENT_DURATION.observe

    def started(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: bool) -> None:
        conn.info["wac_statement_started"] = time.perf_counter()

    def finished(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: bool) -> None:
        start = conn.info.pop("wac_statement_started", None)
        if start is not None:
            observe(time.perf_counter() - start)

    event.listen(engine, "before_cursor_execute", started)
    event.listen(engine, "after_cursor_execute", finished)


def create_engine(url: str) -> AsyncEngine:
    """An async engine tuned for its backend."""
    if url.startswith("sqlite"):
        # A fixed pool: each aiosqlite connection is a thread with its own
        # PRAGMAs, so opening overflow connections under load and closing
        # them again costs more than the queries they serve.
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=16, max_overflow=0, pool_timeout=30)

        event.listen(engine.sync_engine, "connect", set_sqlite_pragmas)
        time_statements(engine.sync_engine)
        return engine
    # No pre-ping: it cost every checkout three round trips (begin, a
    # SELECT, rollback), most of a short unit of work. A connection the
    # server closed is refused at checkout instead (refuse_closed); one that
    # breaks mid-request fails that request with UNAVAILABLE
    # (core/db/outage.py) and SQLAlchemy invalidates the whole pool.
    engine = watch_closed(create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=False))
    time_statements(engine.sync_engine)
    return engine
