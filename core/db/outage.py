"""Whether a failure is the database being out of reach (stopped,
restarting, refusing connections, the pool exhausted) rather than a fault of
the request or of wac: such a request gets UNAVAILABLE ("retry shortly"),
which clients retry, instead of INTERNAL. Each unit of work is one
transaction, so a request that failed this way wrote nothing."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa

# asyncpg's errors for a server that is there but not serving: starting up
# or shutting down, out of connection slots, or the connection dropped.
_ASYNCPG = (
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
)


def is_outage(exc: BaseException) -> bool:
    """True for the database (or the network to it) failing, not the statement."""
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.InterfaceError):
            return True
        cause = exc.orig
        # SQLAlchemy's adapter keeps asyncpg's own error as the cause.
        inner = getattr(cause, "__cause__", None)
        return isinstance(cause, _ASYNCPG) or isinstance(inner, _ASYNCPG) or _locked(exc)
    # A pool that cannot hand out a connection in time; a refused or reset
    # socket, raised as is by the asyncpg dialect when connecting.
    return isinstance(exc, (sa.TimeoutError, OSError, *_ASYNCPG))


def _locked(exc: sa.DBAPIError) -> bool:
    """SQLite's file lock held past its busy timeout: a moment's contention."""
    return isinstance(exc, sa.OperationalError) and "database is locked" in str(exc.orig)
