"""`wac run`'s supervisor: what counts as a crash. Children are small real
processes; the restart delays are shortened, the rules are not."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from cli.supervisor import MAX_RESTARTS, Supervisor
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]

# Appends a line per start to the file named by argv[1], then exits with argv[2].
CHILD = "import sys; open(sys.argv[1], 'a').write('started\\n'); sys.exit(int(sys.argv[2]))"


def supervisor(starts: Path, code: int) -> Supervisor:
    # The role is the child's last argument: here, its exit code.
    program = [sys.executable, "-c", CHILD, str(starts)]
    return Supervisor([str(code)], [], grace=seconds(), restart_delay=0.01, max_restart_delay=0.05, program=program)


def started(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


async def test_clean_exits_are_restarted_and_never_stop_everything(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    running = supervisor(starts, 0)
    task = asyncio.create_task(running.run())
    try:
        # A start after the sixth clean exit: Envoy's /quitquitquit six
        # times in a minute, which stopped everything at the fifth.
        async with asyncio.timeout(seconds(2)):
            while started(starts) < MAX_RESTARTS + 2:
                assert not task.done(), "the supervisor gave up on a child that exits cleanly"
                await asyncio.sleep(0.01)
        assert not task.done()
        assert running.failure is None
    finally:
        running.stop()
        code = await asyncio.wait_for(task, seconds())
    assert code == 0


async def test_crashes_still_stop_everything_after_five(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    running = supervisor(starts, 3)
    code = await asyncio.wait_for(running.run(), seconds(2))
    assert code == 1
    assert started(starts) == MAX_RESTARTS
    assert running.failure is not None and "exited 5 times" in running.failure


async def test_a_configuration_refusal_stops_everything_at_once(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    running = supervisor(starts, 78)
    code = await asyncio.wait_for(running.run(), seconds(2))
    assert code == 1
    assert started(starts) == 1


# A supervisor in its own process, whose one child records its pid and sleeps.
SUPERVISOR = """
import asyncio, sys
from cli.supervisor import Supervisor
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
asyncio.run(Supervisor([sys.argv[1]], [], program=[sys.executable, "-c", child]).run())
"""


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    """kill -9 of `wac run` left its core holding the data dir's lock and
    its ports, so the next `wac run` could not start."""
    pid_file = tmp_path / "child.pid"
    supervisor_process = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(pid_file)], cwd=ROOT)
    try:
        deadline = time.monotonic() + seconds()
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.01)
        child = int(pid_file.read_text())
        supervisor_process.kill()
        supervisor_process.wait(seconds())
        deadline = time.monotonic() + seconds()
        while alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its supervisor"
            time.sleep(0.01)
    finally:
        if supervisor_process.poll() is None:
            supervisor_process.kill()
            supervisor_process.wait()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (new) parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
