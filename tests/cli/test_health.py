"""The node's health as an operator checks it, on one real `wac run`
(core, edge, Envoy): /healthz and /readyz through the front door, the
core's grpc.health.v1 through the same door, and `wac status`.

Faults: the SQLite file moved away (the database unreachable), the core
stopped (SIGSTOP: it answers nothing), and the edge cut off from a core
that still serves (the edge reaches the core through a relay here, which
the test cuts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.asyncio.client import connect

from tests.calls.support import SDP
from tests.cli.test_run_process import Run, environment, front_door_answers
from tests.support.cli import ROOT, stop
from tests.support.run import start_run
from tests.support.server import free_port
from tests.support.timing import seconds
from tests.wapi.support import WapiClient

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Relay:
    """TCP from a port of its own to ``target``; ``cut`` refuses and drops
    every connection, ``mend`` accepts again on the same port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.mend()

    def mend(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        # Wakes the accepting thread (a bare close would leave it listening).
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    core = free_port()
    relay = Relay(core)
    yield relay
    if relay._listener is not None:
        relay.cut()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, relay: Relay) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("health")
    data = work / "data"
    front = free_port()
    env = environment(data, front, relay.target)
    # The edge reaches the core through the relay, which a test cuts.
    env["WAC_EDGE_CORE_ADDRESS"] = f"127.0.0.1:{relay.port}"
    log = work / "run.log"
    process = start_run(env, log, "--demo")
    running = Run(process, data, log, front, relay.target, env)
    try:
        until(lambda: front_door_answers(running), "wac run serving", running, seconds(6))
        until(lambda: readyz(running)[0] == 200, "the node ready", running, seconds(2))
        yield running
    finally:
        stop(process)


def until(condition: Callable[[], bool], what: str, run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{run.output()[-4000:]}")
        time.sleep(0.1)


def get(run: Run, path: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"http://127.0.0.1:{run.front}{path}", timeout=seconds(2))
    assert answer.headers["content-type"] == "application/json"
    return answer.status_code, answer.json()


def readyz(run: Run) -> tuple[int, dict[str, Any]]:
    return get(run, "/readyz")


def failing(body: dict[str, Any]) -> dict[str, str]:
    return {name: check.get("output", "") for name, check in body["checks"].items() if check["status"] == "fail"}


def grpc_health(run: Run, service: str = "") -> int | None:
    """The core's status through the front door, None when nothing answers."""
    with grpc.insecure_channel(f"127.0.0.1:{run.front}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=seconds(0.3)
            )
        except grpc.RpcError:
            return None
    return int(answer.status)


def wac_status(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "status", *args],
        env=run.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(2),
        check=False,
    )


def test_all_up_healthz_readyz_and_grpc_health_pass(run: Run) -> None:
    assert get(run, "/healthz") == (200, {"status": "pass"})
    status, body = readyz(run)
    assert status == 200, body
    assert body == {
        "status": "pass",
        "checks": {name: {"status": "pass"} for name in ("edge", "core", "database")},
    }
    assert grpc_health(run) == SERVING
    assert grpc_health(run, "wac.v1.CallsService") == SERVING


def test_database_unreachable_readyz_names_it_and_grpc_health_is_not_serving(run: Run) -> None:
    database = run.data / "wac.sqlite3"
    aside = run.data / "aside.sqlite3"
    database.rename(aside)
    try:
        until(lambda: readyz(run)[0] == 503, "/readyz 503", run, seconds())
        _status, body = readyz(run)
        assert list(failing(body)) == ["database"], body
        assert "unreachable" in failing(body)["database"]
        # No path, URL or stack trace in what anyone may read.
        assert str(run.data) not in json.dumps(body) and "Traceback" not in json.dumps(body)
        assert grpc_health(run) == NOT_SERVING
        assert grpc_health(run, "wac.v1.IdentityService") == NOT_SERVING
        # Liveness never depends on the database.
        assert get(run, "/healthz")[0] == 200
        # Its status files are rewritten every 2 s.
        until(lambda: wac_status(run).returncode == 1, "wac status exits 1", run, seconds())
        assert "ready: NO: database: unreachable" in wac_status(run).stdout
    finally:
        aside.rename(database)
    until(lambda: readyz(run)[0] == 200, "/readyz 200 again", run, seconds())
    until(lambda: grpc_health(run) == SERVING, "SERVING again", run, seconds())


def test_database_not_migrated_readyz_says_so(run: Run) -> None:
    def set_revision(revision: str) -> str:
        with contextlib.closing(sqlite3.connect(run.data / "wac.sqlite3", timeout=seconds())) as db, db:
            (before,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        return str(before)

    head = set_revision("0001")
    try:
        until(lambda: readyz(run)[0] == 503, "/readyz 503", run, seconds())
        assert failing(readyz(run)[1]) == {"database": f"not migrated: the schema is at 0001, this core needs {head}"}
        assert grpc_health(run) == NOT_SERVING
    finally:
        set_revision(head)
    until(lambda: readyz(run)[0] == 200, "/readyz 200 again", run, seconds())


def test_core_down_readyz_names_the_core(run: Run) -> None:
    core = run.pids()["core"]
    os.kill(core, signal.SIGSTOP)
    try:
        until(lambda: readyz(run)[0] == 503, "/readyz 503", run, seconds())
        assert "core" in failing(readyz(run)[1])
        assert grpc_health(run) is None
        assert get(run, "/healthz")[0] == 200
    finally:
        os.kill(core, signal.SIGCONT)
    until(lambda: readyz(run)[0] == 200, "/readyz 200 again", run, seconds())
    assert grpc_health(run) == SERVING


def test_edge_lost_the_core_readyz_names_the_edge_while_the_core_serves(run: Run, relay: Relay) -> None:
    relay.cut()
    try:
        until(lambda: readyz(run)[0] == 503, "/readyz 503", run, seconds())
        failed = failing(readyz(run)[1])
        assert failed["edge"].startswith("not connected to the core"), failed
        # The core itself still serves the front door.
        assert grpc_health(run) == SERVING
    finally:
        relay.mend()
    until(lambda: readyz(run)[0] == 200, "/readyz 200 again", run, seconds(2))


async def _party(run: Run, username: str, password: str) -> WapiClient:
    client = WapiClient(await connect(f"ws://127.0.0.1:{run.front}/wapi", open_timeout=seconds()))
    await client.login(username, password)
    await client.result("EventsService.Subscribe", {"afterSeq": "0"})
    return client


def test_wac_status_shows_children_sockets_and_calls(run: Run) -> None:
    passwords = dict(line.split("\t") for line in (run.data / "demo-credentials.txt").read_text().splitlines())

    async def scenario() -> None:
        alice = await _party(run, "alice", passwords["alice"])
        bob = await _party(run, "bob", passwords["bob"])
        try:
            await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": {"type": "OFFER", "sdp": SDP}})

            def counted() -> bool:
                document = json.loads(wac_status(run, "--json").stdout)
                return document["sockets"] == 2 and document["active_calls"] == 1

            deadline = time.monotonic() + seconds()
            while not await asyncio.to_thread(counted):
                assert time.monotonic() < deadline, wac_status(run, "--json").stdout
                await asyncio.sleep(0.2)
            shown = wac_status(run)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert "connected sockets: 2   active calls: 1" in shown.stdout
        finally:
            await alice.ws.close()
            await bob.ws.close()

    asyncio.run(scenario())
    document = json.loads(wac_status(run, "--json").stdout)
    assert document["running"] and document["ready"], document
    pids = run.pids()
    children = {child["role"]: child for child in document["children"]}
    assert set(children) == {"core", "edge", "envoy"}
    for role, child in children.items():
        assert child["state"] == "running" and child["pid"] == pids[role], child
        assert child["uptime"] > 0 and child["restarts"] == 0
    assert children["envoy"]["listen"] == [f"127.0.0.1:{run.front}"]
    assert children["core"]["listen"] == [f"127.0.0.1:{run.core}"]
    assert document["database"] == f"sqlite {run.data / 'wac.sqlite3'}"
    text = wac_status(run).stdout
    assert len(text.splitlines()) <= 12
    for role in children:
        assert f"{role:<10} running" in text


def test_wac_status_of_a_stopped_node_exits_3(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = environment(data, free_port(), free_port())
    shown = subprocess.run(
        [sys.executable, "-m", "cli", "status"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert "not running" in shown.stdout
