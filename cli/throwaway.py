"""Throwaway PostgreSQL and Redis servers for ``wac cluster`` on one machine.

Each runs in the foreground as a child of this process, on 127.0.0.1 at a
free port, with its files in a temp dir of its own that is removed when it
stops: nothing in them survives (fsync off, no Redis persistence). They are
for seeing a cluster locally, never for keeping data; production names its
own servers (``[core] database_url``, ``[cluster] redis_url``).

PostgreSQL refuses to run as root: as root, the temp dir is given to the
``postgres`` system user (Debian's postgresql-common creates it) and both
initdb and postgres run as that user. The temp dir is not under the data dir,
which is private to wac's user and so closed to ``postgres``; its path is
also kept short for the 107 bytes of a unix socket's path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cli.supervisor import die_with_parent

_DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
_POSTGRES_USER = "postgres"
# The superuser initdb creates, and the database wac uses.
_ROLE = "wac"
_DATABASE = "wac"
# Seconds a server gets to answer its first probe; tries at a new port each.
_READY_TIMEOUT = 20.0
_TRIES = 3


class ThrowawayError(RuntimeError):
    """A throwaway server's program is missing or it did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Where consecutive ports are chosen from: below the kernel's ephemeral
# range, which no outgoing connection takes from.
_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports on 127.0.0.1 that were free
    a moment ago: a base port a cluster's plan adds to. Chosen below the
    ephemeral range: the cluster's own connections (to its database, to
    Redis) take ports from there, and one could take a planned port before
    the node that is to listen on it has started."""
    ceiling = _ephemeral_low() - count
    for _ in range(200):
        first = random.randrange(_LOWEST_PORT, ceiling) if ceiling > _LOWEST_PORT else free_port()
        if first + count < 65536 and all(_bindable(port) for port in range(first, first + count)):
            return first
    raise ThrowawayError(f"no {count} consecutive free ports")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands outgoing connections (32768 where it does not say)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def postgres_bin_dir() -> Path:
    """The directory holding initdb and postgres: Debian's newest, else PATH's."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(_DEBIAN_POSTGRES.glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    raise ThrowawayError(
        "PostgreSQL is not installed (apt-get install postgresql), and no [core] database_url was given"
    )


def _as_postgres_user(directory: Path) -> dict[str, Any]:
    """Popen's arguments to run as the postgres user when root (and give it directory)."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(_POSTGRES_USER)
    except KeyError:
        raise ThrowawayError(f"running as root and there is no '{_POSTGRES_USER}' user to run PostgreSQL as") from None
    for path in (directory, *directory.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)
    # Popen switches user itself, so signals reach postgres, not a wrapper.
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _stop(process: subprocess.Popen[bytes], stop_signal: int, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(process: subprocess.Popen[bytes], probe: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False  # typically: the port was taken meanwhile
        if probe():
            return True
        time.sleep(0.05)
    return False


def _launch(
    name: str,
    command: Callable[[int], list[str]],
    answers: Callable[[int], bool],
    directory: Path,
    log: Path,
    stop_signal: int,
    popen: dict[str, Any],
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command(port)`` at a free port until it answers there (a port
    can be taken between choosing and binding it): the process and its port."""
    for _ in range(_TRIES):
        port = free_port()
        with log.open("ab") as sink:
            process = subprocess.Popen(
                command(port),
                cwd=directory,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Not in the launcher's process group: a Ctrl-C reaches the
                # launcher, which stops the servers last, after the cores.
                start_new_session=True,
                # Stopped even when the launcher is killed (SIGKILL): a server
                # left running would hold its port and temp dir. Started
                # before the launcher runs any other thread.
                preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
                **popen,
            )
        if _wait_ready(process, functools.partial(answers, port)):
            return process, port
        _stop(process, stop_signal)
    raise ThrowawayError(f"{name} did not start: {_log_tail(log)}")


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server with an empty database: yields its postgresql+asyncpg:// URL."""
    import psycopg

    bin_dir = postgres_bin_dir()
    directory = Path(tempfile.mkdtemp(prefix=f"wac-cluster-pg-{os.getpid()}-"))
    data, sockets, log = directory / "data", directory / "sockets", directory / "postgres.log"
    sockets.mkdir()
    try:
        as_user = _as_postgres_user(directory)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                *("-D", str(data), "-U", _ROLE, "-A", "trust", "-E", "UTF8"),
                # C collation, like SQLite's byte order; no fsync for a throwaway cluster.
                *("--no-locale", "--no-sync"),
            ],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
            **as_user,
        )
        if init.returncode != 0:
            raise ThrowawayError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")

        def command(port: int) -> list[str]:
            return [
                str(bin_dir / "postgres"),
                *("-D", str(data), "-p", str(port), "-k", str(sockets)),
                *("-c", "listen_addresses=127.0.0.1"),
                *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ]

        def answers(port: int) -> bool:
            try:
                # The socket in our own dir: an answer there is this server's.
                with psycopg.connect(host=str(sockets), port=port, user=_ROLE, dbname="postgres", connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        # PostgreSQL's "fast" shutdown (SIGINT): it does not wait for clients.
        process, port = _launch("postgres", command, answers, directory, log, signal.SIGINT, as_user)
        try:
            with psycopg.connect(
                host=str(sockets), port=port, user=_ROLE, dbname="postgres", autocommit=True
            ) as connection:
                connection.execute(f'CREATE DATABASE "{_DATABASE}"')
            yield f"postgresql+asyncpg://{_ROLE}@127.0.0.1:{port}/{_DATABASE}"
        finally:
            _stop(process, signal.SIGINT)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A Redis server (Debian's redis-server) without persistence: yields its redis:// URL."""
    program = shutil.which("redis-server")
    if program is None:
        raise ThrowawayError("redis-server is not installed (apt-get install redis-server), and no redis_url was given")
    directory = Path(tempfile.mkdtemp(prefix=f"wac-cluster-redis-{os.getpid()}-"))
    log = directory / "redis.log"
    try:

        def command(port: int) -> list[str]:
            return [
                program,
                *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)),
                # No RDB snapshots or AOF: a throwaway server.
                *("--save", "", "--appendonly", "no"),
            ]

        process, port = _launch("redis-server", command, _redis_pings, directory, log, signal.SIGTERM, {})
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process, signal.SIGTERM)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _redis_pings(port: int) -> bool:
    """PING answered +PONG: enough for readiness, without a client library here."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False
