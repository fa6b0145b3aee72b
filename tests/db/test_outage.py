"""Which failures are the database out of reach (UNAVAILABLE) rather than a
fault (INTERNAL); the fault tests (tests/cluster/test_faults.py) stop a real
PostgreSQL under a running cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import redis.asyncio as redis
from sqlalchemy import exc as sa

from core.cluster.choose import REDIS_OUT_OF_REACH, shared_state
from core.db.outage import DATABASE, describe, is_outage
from tests.support.cli import ROOT
from tests.support.core import test_config as config_for
from tests.support.server import free_port


def test_a_refused_or_reset_connection_is_an_outage() -> None:
    assert is_outage(ConnectionRefusedError(111, "Connect call failed"))
    assert is_outage(sa.TimeoutError("QueuePool limit reached"))
    assert is_outage(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))


def test_a_dropped_connection_under_a_statement_is_an_outage() -> None:
    dropped = sa.DBAPIError("SELECT 1", {}, asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert is_outage(dropped)
    invalidated = sa.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert is_outage(invalidated)


def test_asyncpg_is_looked_up_once_loaded_never_imported_for_it() -> None:
    # A fresh interpreter, as a core starts: one on SQLite never loads
    # asyncpg, and a failure classified before the PostgreSQL engine loaded
    # it does not keep asyncpg's errors from being recognised after.
    code = (
        "import sys\n"
        "from core.db.outage import is_outage\n"
        "assert is_outage(ConnectionRefusedError(111, 'Connect call failed'))\n"
        "assert not is_outage(ValueError('a bug'))\n"
        "assert 'asyncpg' not in sys.modules, 'loaded for the classifier'\n"
        "import asyncpg\n"
        "assert is_outage(asyncpg.exceptions.CannotConnectNowError('the database system is starting up'))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_faulty_statement_is_not() -> None:
    assert not is_outage(sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(sa.ProgrammingError("SELEC", {}, Exception("syntax error")))
    assert not is_outage(ValueError("a bug"))


async def test_a_cluster_core_counts_redis_out_of_reach_as_an_outage(tmp_path: Path) -> None:
    assert describe(redis.ConnectionError("Connection closed by server.")) in (None, REDIS_OUT_OF_REACH)
    state = shared_state(config_for(tmp_path, {"WAC_CLUSTER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    try:
        assert describe(redis.ConnectionError("Connection closed by server.")) == REDIS_OUT_OF_REACH
        assert describe(redis.TimeoutError("Timeout reading from socket")) == REDIS_OUT_OF_REACH
        assert describe(redis.ResponseError("WRONGTYPE")) is None, "a bad command is a fault, not an outage"
        assert describe(ConnectionRefusedError(111, "Connect call failed")) == DATABASE
    finally:
        await state.close()
