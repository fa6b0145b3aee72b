"""`wac run` against the attacks of a local user or a careless operator: a
second core or supervisor on its data dir or port, a hangup, Envoy's admin
interface. One real `wac run` serves the whole module, in its own session
so that a hangup can reach its whole process group."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli import envoy
from tests.support.cli import ROOT, stop, wac
from tests.support.server import free_port
from tests.support.timing import seconds

EX_CONFIG = 78


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    data: Path
    log: Path
    front: int
    core: int
    env: dict[str, str]

    @property
    def admin_socket(self) -> Path:
        return self.data / "envoy-admin.sock"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The latest pid of each child, from the supervisor's own log lines."""
        return {role: int(pid) for role, pid in re.findall(r"wac: started (\w+) \(pid (\d+)\)", self.output())}


def environment(data: Path, front: int, core: int) -> dict[str, str]:
    env = {
        **os.environ,
        "WAC_DATA_DIR": str(data),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
        # Kamailio, rtpengine and Janus would take their fixed default
        # ports; tests/gateway and tests/janus run them on free ones.
        "WAC_GATEWAY_ENABLED": "false",
        "WAC_CONFERENCES_ENABLED": "false",
    }
    # The admin interface's default is under test: no port from outside.
    env.pop("WAC_ENVOY_ADMIN_PORT", None)
    env.pop("WAC_CONFIG", None)
    return env


def wait_for(condition: Callable[[], bool], what: str, run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{run.output()}")
        time.sleep(0.05)


def front_door_answers(run: Run) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{run.front}/sapi/v1/subscribers", timeout=1).status_code == 401
    except httpx.HTTPError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("run")
    data = work / "data"
    front, core = free_port(), free_port()
    env = environment(data, front, core)
    log = work / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "run"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    running = Run(process, data, log, front, core, env)
    try:
        wait_for(lambda: front_door_answers(running), "wac run serving", running, seconds(6))
        yield running
    finally:
        stop(process)


def test_the_data_dir_is_private_and_envoy_admin_is_a_0600_socket(run: Run) -> None:
    assert stat.S_IMODE(run.data.stat().st_mode) == 0o700
    entries = {entry.name: entry.lstat() for entry in run.data.iterdir()}
    assert {"wac.sqlite3", "envoy.yaml", "core.lock", "run.lock"} <= set(entries), sorted(entries)
    for name, info in entries.items():
        if stat.S_ISREG(info.st_mode):
            assert stat.S_IMODE(info.st_mode) == 0o600, f"{name} is {stat.S_IMODE(info.st_mode):04o}"
    admin = entries["envoy-admin.sock"]
    assert stat.S_ISSOCK(admin.st_mode)
    assert stat.S_IMODE(admin.st_mode) == 0o600
    assert envoy.admin_state(run.admin_socket) == "LIVE"
    # No admin port on 127.0.0.1: the rendered configuration has none.
    rendered = (run.data / "envoy.yaml").read_text()
    admin_section = rendered.split("admin:", 1)[1].split("overload_manager:", 1)[0]
    assert "pipe:" in admin_section and "socket_address" not in admin_section


def test_a_second_wac_run_on_the_data_dir_exits_at_once(run: Run) -> None:
    env = environment(run.data, free_port(), free_port())
    result = wac("run", env=env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"another wac run is already running on data dir {run.data}" in result.stderr
    assert front_door_answers(run)


def test_a_second_core_on_the_data_dir_exits_at_once(run: Run) -> None:
    env = {**run.env, "WAC_CORE_LISTEN": f"127.0.0.1:{free_port()}"}
    result = wac("core", env=env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"another core is already running on data dir {run.data} (pid {run.pids()['core']})" in result.stderr


def test_a_second_core_on_the_port_cannot_bind_beside_the_live_one(run: Run, tmp_path: Path) -> None:
    env = {**run.env, "WAC_DATA_DIR": str(tmp_path / "other")}
    result = wac("core", env=env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"cannot listen on 127.0.0.1:{run.core}: address in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_envoy_on_the_data_dir_leaves_the_live_admin_socket_alone(run: Run) -> None:
    env = {**run.env, "WAC_ENVOY_LISTEN": f"127.0.0.1:{free_port()}"}
    result = wac("envoy", env=env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"another Envoy is running on {run.admin_socket}" in result.stderr
    assert envoy.admin_state(run.admin_socket) == "LIVE"


def test_a_hangup_of_the_whole_process_group_stops_nothing(run: Run) -> None:
    before = run.pids()
    assert set(before) == {"core", "edge", "envoy"}, run.output()
    # What a closed terminal does: SIGHUP to the supervisor and every child.
    os.killpg(run.process.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in run.output(), "the supervisor's SIGHUP notice", run, seconds())
    assert run.process.poll() is None, run.output()
    for role, pid in before.items():
        assert alive(pid), f"{role} died of SIGHUP\n{run.output()}"
    # Each child serves after the signal (a dying one would not): the core
    # through the SAPI, the edge through the demo page (503 if it is gone).
    assert front_door_answers(run)
    assert httpx.get(f"http://127.0.0.1:{run.front}/", timeout=seconds()).status_code != 503
    assert run.pids() == before, "no child was restarted"
    assert all(alive(pid) for pid in before.values())


def test_quitquitquit_through_the_admin_socket_is_a_clean_restart(run: Run) -> None:
    first = run.pids()["envoy"]
    status, _body = envoy.admin_request(run.admin_socket, "/quitquitquit", method="POST")
    assert status == 200
    wait_for(lambda: run.pids()["envoy"] != first, "envoy's restart", run, seconds(2))
    assert "envoy exited with code 0; restarting" in run.output()
    wait_for(lambda: front_door_answers(run), "the front door after the restart", run, seconds(4))
    assert envoy.admin_state(run.admin_socket) == "LIVE"
    assert run.process.poll() is None


def test_the_admin_socket_is_not_reachable_over_tcp(run: Run) -> None:
    """Envoy listens on the front door only: no other TCP port of its own."""
    assert listening_ports(run.pids()["envoy"]) == {run.front}


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, read from /proc: its socket
    inodes matched against the kernel's tables of listening sockets."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_nothing_is_left_behind_after_the_supervisor_stops(run: Run) -> None:
    children = run.pids()
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(seconds(4)) == 0, run.output()
    for role, pid in children.items():
        wait_for(lambda pid=pid: not alive(pid), f"{role} stopping", run, seconds())  # type: ignore[misc]
    # The locks went with their holders: the next core or wac run may start.
    for name in ("core.lock", "run.lock"):
        with (run.data / name).open("rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
