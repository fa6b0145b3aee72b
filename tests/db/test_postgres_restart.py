"""A PostgreSQL restart under a running core: once the server is back, the
very first read and write succeed. The pooled connections the server closed
are refused at checkout (core/db/engine.refuse_closed) and replaced, rather
than each failing one request with UNAVAILABLE."""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, text

from core.db.engine import create_engine
from core.db.work import dispose, work_for
from tests.support.postgres import Postgres, postgres_bin_dir, require_postgres
from tests.support.server import throwaway


def _write(conn: Connection) -> None:
    conn.execute(text("INSERT INTO notes (body) VALUES ('after the restart')"))


def _count(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM notes")).scalar_one()


async def test_the_first_requests_after_a_restart_succeed() -> None:
    require_postgres()
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    with throwaway(lambda directory: Postgres(directory, bin_dir), "wac-pg-") as server:
        name = server.create_database()
        with server.connect(name) as conn:
            conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        engine = create_engine(server.url(name))
        work = work_for(engine)
        try:
            # Both pools (writes and reads) hold an open connection.
            await work.write(lambda conn: conn.execute(text("INSERT INTO notes (body) VALUES ('before')")))
            assert await work.read(_count) == 1
            port = server.port
            server.stop()
            server.start(port)
            # A running core's event loop reads the server's close as it
            # happens; this test's loop was blocked in stop() and start().
            await asyncio.sleep(0.05)
            await work.write(_write)
            assert await work.read(_count) == 2
        finally:
            await dispose(engine)
