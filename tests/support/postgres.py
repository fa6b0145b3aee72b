"""A private PostgreSQL server for tests.

Each ``Postgres`` runs ``initdb`` into a temp dir, then ``postgres`` in the
foreground as a child of the test, listening on 127.0.0.1 at a free port and
on a unix socket in its own dir, with fsync off (nothing here must survive a
crash). It is always stopped. The machine's own cluster (Debian's "main"),
if any, is neither needed nor touched.

PostgreSQL refuses to run as root and CI runs as root: there the temp dir
belongs to the ``postgres`` system user and both programs run as that user.

Under CI=true a missing PostgreSQL fails the test; elsewhere it skips with
the reason, so a laptop without PostgreSQL still runs the rest.

Fixtures: ``postgres_server`` (one per session) and ``postgres_url`` (a
fresh empty database per test, dropped after it).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cli.throwaway import ThrowawayError
from cli.throwaway import postgres_bin_dir as throwaway_postgres_bin_dir
from tests.support.server import LocalServer, throwaway
from tests.support.system import missing

_DEBIAN = Path("/usr/lib/postgresql")
_SYSTEM_USER = "postgres"  # created by Debian's postgresql-common


def postgres_bin_dir() -> Path | None:
    """The directory holding initdb and postgres (the one `wac cluster` uses), or None."""
    try:
        return throwaway_postgres_bin_dir()
    except ThrowawayError:
        return None


def require_postgres() -> Path:
    """The binaries' directory; fails under CI and skips elsewhere if PostgreSQL is missing."""
    directory = postgres_bin_dir()
    reason = "PostgreSQL is not installed (apt-get install postgresql)"
    if directory is not None and os.geteuid() == 0:
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            directory, reason = None, f"running as root and there is no '{_SYSTEM_USER}' user to run PostgreSQL as"
    if directory is not None:
        return directory
    missing(reason)


class Postgres(LocalServer):
    """One PostgreSQL server with its cluster in ``directory``."""

    name = "postgres"
    # PostgreSQL's "fast" shutdown: it does not wait for clients.
    stop_signal = signal.SIGINT

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        super().__init__(directory)
        self.bin_dir = bin_dir
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        # A superuser name of its own: connecting as it cannot reach another
        # session's server that took the port first.
        self.user = f"wac_{secrets.token_hex(4)}"
        self.sockets.mkdir(parents=True, exist_ok=True)
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SYSTEM_USER)
            for path in (directory, self.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
            # Popen switches user itself rather than through runuser, so that
            # signals reach postgres and not a wrapper in between.
            self._as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def initdb(self) -> None:
        command = [
            str(self.bin_dir / "initdb"),
            *("-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8"),
            # C collation, like SQLite's byte order; no fsync for a throwaway cluster.
            *("--no-locale", "--no-sync"),
        ]
        result = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, check=False, **self._as_user
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    def start(self, port: int | None = None) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.initdb()
        super().start(port)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            *("-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets)),
            *("-c", "listen_addresses=127.0.0.1"),
            *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
        ]

    def popen_options(self) -> dict[str, Any]:
        return {"cwd": self.directory, **self._as_user}

    def ready(self) -> bool:
        try:
            # The unix socket is in our own dir, so an answer there is from
            # this server; it opens after the TCP port is bound.
            with self.connect(host=str(self.sockets)):
                return True
        except psycopg.OperationalError:
            return False

    def connect(self, database: str = "postgres", host: str = "127.0.0.1") -> psycopg.Connection[Any]:
        """A synchronous autocommit connection as the superuser."""
        return psycopg.connect(
            host=host, port=self.port, user=self.user, dbname=database, autocommit=True, connect_timeout=2
        )

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"test_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            # FORCE: a pool the test left open must not keep the database alive.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole session."""
    bin_dir = require_postgres()
    with throwaway(lambda directory: Postgres(directory, bin_dir), "wac-pg-") as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> Iterator[str]:
    """A fresh empty database of this test's own: its postgresql+asyncpg:// URL."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
