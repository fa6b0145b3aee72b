"""A private Redis server for tests.

Each ``Redis`` runs Debian's ``redis-server`` in the foreground as a child of
the test, on 127.0.0.1 at a free port, with no persistence (nothing here must
survive a restart unless a test asks for it) and its files in a temp dir. It
is always stopped. The machine's own Redis on 6379, if any, is neither needed
nor touched.

Under CI=true a missing Redis fails the test; elsewhere it skips with the
reason, so a laptop without Redis still runs the rest.

Fixtures: ``redis_server`` (one per session) and ``redis_url`` (a database
number of this test's own, flushed after it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import LocalServer, throwaway
from tests.support.system import require_program

# Redis has 16 numbered databases by default; tests take them in turn and
# flush each after use, so a leftover key never reaches another test.
_DATABASES = 16


class Redis(LocalServer):
    """One Redis server with its working files in ``directory``."""

    name = "redis"

    def __init__(self, directory: Path, program: str) -> None:
        super().__init__(directory)
        self.program = program
        self._next_db = 0

    def command(self) -> list[str]:
        return [
            self.program,
            *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)),
            # No RDB snapshots or AOF: a throwaway server.
            *("--save", "", "--appendonly", "no"),
            *("--databases", str(_DATABASES)),
        ]

    def popen_options(self) -> dict[str, object]:
        return {"cwd": self.directory}

    def ready(self) -> bool:
        return self.command_reply(b"PING") == b"+PONG"

    def command_reply(self, *words: bytes) -> bytes:
        """One RESP command over a fresh connection: its reply's first line.
        Enough for readiness and flushing, without an async client here."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(request)
                return conn.recv(256).split(b"\r\n", 1)[0]
        except OSError:
            return b""

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def take_database(self) -> int:
        db, self._next_db = self._next_db, (self._next_db + 1) % _DATABASES
        self.flush(db)
        return db

    def flush(self, db: int) -> None:
        # SELECT applies to one connection, so select and flush on the same one.
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n*1\r\n$7\r\nFLUSHDB\r\n" % (len(str(db)), db))
            replies = b""
            while replies.count(b"\r\n") < 2:
                chunk = conn.recv(256)
                if not chunk:
                    break
                replies += chunk
        if replies != b"+OK\r\n+OK\r\n":
            raise RuntimeError(f"redis: flushing database {db} answered {replies!r}")


def require_redis() -> str:
    """redis-server's path; fails under CI and skips elsewhere if it is missing."""
    return require_program("redis-server", "apt-get install redis-server")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """One Redis server for the whole session."""
    program = require_redis()
    with throwaway(lambda directory: Redis(directory, program), "wac-redis-") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: Redis) -> Iterator[str]:
    """A redis:// URL to an empty database of this test's own, flushed after it."""
    db = redis_server.take_database()
    try:
        yield redis_server.url(db)
    finally:
        redis_server.flush(db)
