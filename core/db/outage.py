"""Whether a failure is the database being out of reach (stopped,
restarting, refusing connections, the pool exhausted) rather than a fault of
the request or of wac: such a request gets UNAVAILABLE ("retry shortly"),
which clients retry, instead of INTERNAL. Each unit of work is one
transaction, so a request that failed this way wrote nothing.

The cluster's Redis is out of reach the same way; its errors are registered
here (``register``) by the one place that chooses Redis
(core/cluster/choose.py), so nothing else imports its client."""

from __future__ import annotations

import sys

from sqlalchemy import exc as sa


def _asyncpg_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's errors for a server that is there but not serving: starting
    up or shutting down, out of connection slots, or the connection dropped.

    Looked up, not imported: SQLAlchemy's PostgreSQL dialect imports asyncpg
    when its engine is made, so an asyncpg error cannot exist before, and a
    core on SQLite never loads it (3 MiB). Looked up at each call, never
    kept: a classification made before the engine existed must not stick."""
    asyncpg = sys.modules.get("asyncpg")
    errors = getattr(asyncpg, "exceptions", None)  # None while asyncpg is being imported
    if errors is None:
        return ()
    return (
        errors.CannotConnectNowError,
        errors.TooManyConnectionsError,
        errors.AdminShutdownError,
        errors.ConnectionDoesNotExistError,
        errors.InterfaceError,
    )


# Other stores' "out of reach" errors -> what the client is told.
_OTHERS: dict[type[BaseException], str] = {}

DATABASE = "the database is unreachable; retry shortly"


def register(kind: type[BaseException], message: str) -> None:
    """``kind`` raised by another shared store means it is out of reach."""
    _OTHERS[kind] = message


def describe(exc: BaseException) -> str | None:
    """What a client is told of an outage (UNAVAILABLE), or None if ``exc``
    is not one."""
    for kind, message in _OTHERS.items():
        if isinstance(exc, kind):
            return message
    return DATABASE if is_outage(exc) else None


def is_outage(exc: BaseException) -> bool:
    """True for the database (or the network to it) failing, not the statement."""
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.InterfaceError):
            return True
        cause = exc.orig
        # SQLAlchemy's adapter keeps asyncpg's own error as the cause.
        inner = getattr(cause, "__cause__", None)
        asyncpg = _asyncpg_errors()
        return isinstance(cause, asyncpg) or isinstance(inner, asyncpg) or _locked(exc)
    # A pool that cannot hand out a connection in time; a refused or reset
    # socket, raised as is by the asyncpg dialect when connecting.
    return isinstance(exc, (sa.TimeoutError, OSError, *_asyncpg_errors()))


def _locked(exc: sa.DBAPIError) -> bool:
    """SQLite's file lock held past its busy timeout: a moment's contention."""
    return isinstance(exc, sa.OperationalError) and "database is locked" in str(exc.orig)
