"""A real server the tests run as a child process on 127.0.0.1 (slapd,
PostgreSQL): started at a free port, proven ready by a probe that only this
instance can answer, and always stopped."""

from __future__ import annotations

import collections
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.support.timing import seconds

# Ports handed out come from outside Linux's ephemeral range (32768-60999):
# a port picked there is free when picked, but any outgoing connection (to
# Envoy, the core, the SAPI) may take it before the server that was to
# listen on it starts, and Kamailio then fails with "Address already in
# use". Below it: 20000-29999 is the tests' RTP (rtpengine), 10000-17999
# bench_gateway's.
_POOL = (*range(18000, 20000), *range(30000, 32768))
# Not handed out twice in a while: a port given to one server may not be
# listening yet when the next is picked.
_RECENT: collections.deque[int] = collections.deque(maxlen=1500)


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1, outside the ephemeral range."""
    for _ in range(1000):
        port = random.choice(_POOL)
        if port in _RECENT:
            continue
        if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            _RECENT.append(port)
            return port
    raise RuntimeError("no free port left in the tests' pool")


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalServer(ABC):
    """Subclasses say how to run the server and how to tell it is ready."""

    name = "server"  # for messages and the log file's name
    stop_signal = signal.SIGTERM

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line, listening on ``self.port``."""

    def popen_options(self) -> dict[str, Any]:
        """Extra subprocess.Popen arguments (a user to run as, a directory)."""
        return {}

    @abstractmethod
    def ready(self) -> bool:
        """One readiness probe: True once the server answers."""

    def start(self, port: int | None = None) -> None:
        """Start at a free port, or at ``port`` (a restart where clients
        expect the server back at the same address)."""
        for _ in range(1 if port else 3):  # a free port can be taken between finding and binding it
            self.port = port or free_port()
            with (self.directory / f"{self.name}.log").open("ab") as log:
                self.process = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    **self.popen_options(),
                )
            if self._wait_ready(seconds(2)):
                return
            self.stop()
        raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False  # typically: the port was taken
            if self.ready():
                return self.process.poll() is None
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout=seconds(1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self) -> str:
        path = self.directory / f"{self.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


Server = TypeVar("Server", bound=LocalServer)


@contextmanager
def throwaway(make: Callable[[Path], Server], prefix: str) -> Iterator[Server]:
    """A server with a temp dir of its own, started; stopped and its dir
    removed after. Not pytest's tmp_path: that is private to root (a server
    running as another user must enter it) and deep enough to exceed the
    107-byte limit of a unix socket's path."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = make(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
