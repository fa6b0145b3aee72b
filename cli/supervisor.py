"""``wac run``: the embedded default as supervised child processes.

Each child is ``wac <role>`` with the same configuration. A child that dies
is restarted with a growing delay; one that keeps dying (five times in a
minute) stops everything with a clear message, rather than crash-looping.
A child that exits cleanly (code 0: Envoy after an admin /quitquitquit) is
restarted with the same delay but never counts as a death, so repeated
clean exits cannot stop everything. Exit code 78 (EX_CONFIG) stops
everything at once: restarting cannot fix a configuration.
Ctrl-C or SIGTERM stops all children cleanly: SIGTERM, then SIGKILL after
the grace period. SIGHUP is ignored (by the children too): a closed
terminal must not kill the supervisor and orphan its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from settings import status

MAX_RESTARTS = 5
EXIT_CONFIG = 78  # sysexits' EX_CONFIG: restarting cannot help
RESTART_WINDOW = 60.0
# Restart delays double from RESTART_DELAY up to MAX_RESTART_DELAY seconds.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0


# prctl(2) option: the signal a child gets when its parent dies. The
# function is looked up here, in the parent: between fork and exec nothing
# but the call itself should run.
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the supervisor dies, however it dies.

    A supervisor killed with SIGKILL would otherwise leave its core holding
    the data dir's lock and the ports, and the next `wac run` would find
    them taken. Linux only; elsewhere nothing is done.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The supervisor may have died between fork and prctl.
        if os.getppid() != parent:
            os._exit(1)


@dataclass
class Child:
    role: str
    argv: list[str]
    # Added to the supervisor's environment for this child alone (wac
    # cluster: each node's ports and data dir).
    env: Mapping[str, str] | None = None
    process: asyncio.subprocess.Process | None = None
    deaths: deque[float] = field(default_factory=deque)
    # Clean exits in the window: they slow restarts down, never stop them.
    clean_exits: deque[float] = field(default_factory=deque)
    # For `wac status`: running, restarting (after an exit) or stopped.
    state: str = "starting"
    started: float = 0.0
    restarts: int = 0
    last_exit: int | None = None


class Supervisor:
    def __init__(
        self,
        roles: list[str],
        config_args: list[str],
        grace: float = 10.0,
        *,
        restart_delay: float = RESTART_DELAY,
        max_restart_delay: float = MAX_RESTART_DELAY,
        start_gap: float = 0.3,
        program: list[str] | None = None,
        children: Sequence[Child] = (),
        status_dir: Path | None = None,
    ) -> None:
        """Each child runs ``program + [role]`` (default: ``wac CONFIG_ARGS ROLE``);
        ``children`` follow them, each with its own command and environment.
        ``status_dir``: where to keep ``run.status.json`` (settings/status.py),
        each child's state for ``wac status``."""
        program = program if program is not None else [sys.executable, "-m", "cli", *config_args]
        self._children = [*(Child(role, [*program, role]) for role in roles), *children]
        self._grace = grace
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._start_gap = start_gap
        self._stopping = asyncio.Event()
        self._status_dir = status_dir
        self._started = time.time()
        self.failure: str | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        # A handler rather than SIG_IGN, to say so in the log; the children
        # ignore it themselves (cli/main.py), as a terminal hangup reaches the
        # whole process group.
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        watchers = []
        for child in self._children:
            await self._start(child)
            # The core must be up before the edges connect to it; they retry
            # anyway, this only keeps first-start logs quiet.
            await asyncio.sleep(self._start_gap)
            watchers.append(asyncio.create_task(self._watch(child)))
        await self._stopping.wait()
        for watcher in watchers:
            watcher.cancel()
        await self._stop_all()
        for child in self._children:
            child.state = "stopped"
        self._write_status(stopped=True)
        if self.failure:
            print(f"wac: {self.failure}", file=sys.stderr)
            return 1
        return 0

    def stop(self) -> None:
        """Stop every child and return from run (what SIGINT and SIGTERM do)."""
        self._stopping.set()

    def _hangup(self) -> None:
        print("wac: SIGHUP ignored (nothing reloads; restart wac run to apply a new configuration)", file=sys.stderr)

    async def _start(self, child: Child) -> None:
        # preexec_fn runs between fork and exec: only the prctl call there.
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env={**os.environ, **child.env} if child.env else None,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        child.state, child.started = "running", time.time()
        self._write_status()
        print(f"wac: started {child.role} (pid {child.process.pid})", file=sys.stderr)

    async def _watch(self, child: Child) -> None:
        while not self._stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            if code == EXIT_CONFIG:
                self.failure = f"{child.role} refused its configuration (see above); stopping everything"
                self._stopping.set()
                return
            now = time.monotonic()
            # Code 0 is a requested stop (Envoy's /quitquitquit, reachable by
            # whoever reaches its admin interface): not a crash.
            (child.clean_exits if code == 0 else child.deaths).append(now)
            for recent in (child.deaths, child.clean_exits):
                while recent and now - recent[0] > RESTART_WINDOW:
                    recent.popleft()
            if len(child.deaths) >= MAX_RESTARTS:
                self.failure = (
                    f"{child.role} exited {len(child.deaths)} times within {RESTART_WINDOW:.0f} s "
                    f"(last exit code {code}); stopping everything. See its log above."
                )
                self._stopping.set()
                return
            child.state, child.last_exit, child.restarts = "restarting", code, child.restarts + 1
            self._write_status()
            exits = len(child.deaths) + len(child.clean_exits)
            delay = min(self._max_restart_delay, self._restart_delay * 2 ** (exits - 1))
            print(f"wac: {child.role} exited with code {code}; restarting in {delay:.1f} s", file=sys.stderr)
            await asyncio.sleep(delay)
            await self._start(child)

    def _write_status(self, *, stopped: bool = False) -> None:
        if self._status_dir is None:
            return
        document = {
            "pid": os.getpid(),
            "time": time.time(),
            "started": self._started,
            "stopped": stopped,
            "children": [
                {
                    "role": child.role,
                    "state": child.state,
                    "pid": child.process.pid if child.process is not None and child.state == "running" else None,
                    "started": child.started,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit,
                }
                for child in self._children
            ],
        }
        try:
            status.write(self._status_dir, "run", document)
        except OSError as exc:
            print(f"wac: cannot write the status file: {exc}", file=sys.stderr)

    async def _stop_all(self) -> None:
        running = [c for c in self._children if c.process and c.process.returncode is None]
        for child in reversed(running):
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), self._grace)
            except TimeoutError:
                print(f"wac: {child.role} did not stop in {self._grace:.0f} s; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
