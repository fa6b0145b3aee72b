"""Which failures are the database out of reach (UNAVAILABLE) rather than a
fault (INTERNAL); the fault tests (tests/cluster/test_faults.py) stop a real
PostgreSQL under a running cluster."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa

from core.db.outage import is_outage


def test_a_refused_or_reset_connection_is_an_outage() -> None:
    assert is_outage(ConnectionRefusedError(111, "Connect call failed"))
    assert is_outage(sa.TimeoutError("QueuePool limit reached"))
    assert is_outage(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))


def test_a_dropped_connection_under_a_statement_is_an_outage() -> None:
    dropped = sa.DBAPIError("SELECT 1", {}, asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert is_outage(dropped)
    invalidated = sa.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert is_outage(invalidated)


def test_a_faulty_statement_is_not() -> None:
    assert not is_outage(sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(sa.ProgrammingError("SELEC", {}, Exception("syntax error")))
    assert not is_outage(ValueError("a bug"))
