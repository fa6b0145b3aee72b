"""`wac cluster` as a newcomer runs it: two cores and two edges on a
throwaway PostgreSQL and Redis behind one Envoy, each request balanced
across the cores and each WebSocket across the edges, all stopped on SIGTERM.

Which core or edge served is read from Envoy's per-endpoint counters
(its admin /clusters): the cores and edges log nothing per node."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from cli import envoy
from tests.support.cli import ROOT
from tests.support.postgres import require_postgres
from tests.support.redis import require_redis
from tests.support.server import free_port
from tests.support.timing import seconds


@dataclass
class Cluster:
    process: subprocess.Popen[bytes]
    data: Path
    log: Path
    front: int
    cores: tuple[str, ...]
    edges: tuple[str, ...]

    @property
    def admin_socket(self) -> Path:
        return self.data / "cluster" / "envoy" / "envoy-admin.sock"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def counters(self) -> dict[tuple[str, str, str], str]:
        """Envoy's per-endpoint stats: (cluster, host:port, stat) -> value."""
        _status, body = envoy.admin_request(self.admin_socket, "/clusters", timeout=seconds())
        found = {}
        for line in body.splitlines():
            parts = line.split("::")
            if len(parts) == 4:
                found[(parts[0], parts[1], parts[2])] = parts[3]
        return found

    def balancing(self) -> str:
        """Each core's and edge's health and requests, as Envoy sees them (for failure messages)."""
        try:
            counters = self.counters()
        except OSError as error:
            return f"Envoy's admin interface did not answer: {error}"
        wanted = ("health_flags", "rq_total", "rq_active")
        return "\n".join(f"{key[0]} {key[1]} {key[2]}: {value}" for key, value in counters.items() if key[2] in wanted)

    def edges_of(self, cluster: str) -> tuple[str, ...]:
        """The edges' endpoints in Envoy's cluster: each HTTP port is its WebSocket port + 1."""
        if cluster == "wac_edge":
            return self.edges
        return tuple(f"127.0.0.1:{int(host.rsplit(':', 1)[1]) + 1}" for host in self.edges)

    def requests(self, cluster: str, hosts: tuple[str, ...]) -> list[int]:
        counters = self.counters()
        return [int(counters[(cluster, host, "rq_total")]) for host in hosts]


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a base port the cluster adds to)."""
    for _ in range(200):
        first = free_port()
        ports = range(first, first + count)
        if all(_bindable(port) for port in ports):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition: Callable[[], bool], what: str, cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if cluster.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not happen within {timeout:.0f} s\n{cluster.balancing()}\n{cluster.output()[-6000:]}"
            )
        time.sleep(0.1)


def all_healthy(cluster: Cluster) -> bool:
    try:
        counters = cluster.counters()
    except OSError:
        return False
    wanted = [("wac_core", host) for host in cluster.cores] + [
        (name, host) for name in ("wac_edge", "wac_edge_http") for host in cluster.edges_of(name)
    ]
    return all(counters.get((name, host, "health_flags")) == "healthy" for name, host in wanted)


def served_by_all(cluster: Cluster) -> bool:
    """One request through the front door to the cores, one WebSocket to the
    edges; True once every core and edge has served one. Envoy hands a
    health change to its workers up to a second later (its update merge
    window), so a host reported healthy may not be chosen yet."""
    try:
        httpx.get(f"http://127.0.0.1:{cluster.front}/sapi/v1/jwks", timeout=seconds())
        with connect(f"ws://127.0.0.1:{cluster.front}/wapi", open_timeout=seconds()):
            pass
    except (httpx.HTTPError, OSError):
        return False
    return min(cluster.requests("wac_core", cluster.cores) + cluster.requests("wac_edge", cluster.edges)) > 0


@contextmanager
def running_cluster(work: Path, *args: str, env: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """`wac cluster ARGS` on free ports, once every core and edge serves; stopped after."""
    require_postgres()
    require_redis()
    data = work / "data"
    front, core_base, edge_base = free_port(), consecutive_free_ports(3), consecutive_free_ports(4)
    environment = {
        **os.environ,
        "WAC_DATA_DIR": str(data),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_CORE_LISTEN": f"127.0.0.1:{core_base}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{edge_base}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{edge_base + 1}",
        "WAC_GATEWAY_ENABLED": "false",
    }
    for name in ("WAC_CONFIG", "WAC_ENVOY_ADMIN_PORT", "WAC_CORE_DATABASE_URL", "WAC_CLUSTER_REDIS_URL"):
        environment.pop(name, None)
    log = work / "cluster.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            # The side door at the port after the two cores' (the default).
            [sys.executable, "-m", "cli", "cluster", *args],
            env={**environment, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    running = Cluster(
        process,
        data,
        log,
        front,
        cores=(f"127.0.0.1:{core_base}", f"127.0.0.1:{core_base + 1}"),
        edges=(f"127.0.0.1:{edge_base}", f"127.0.0.1:{edge_base + 2}"),
    )
    try:
        wait_for(lambda: all_healthy(running), "every core and edge healthy behind Envoy", running, seconds(12))
        wait_for(lambda: served_by_all(running), "every core and edge served a request", running, seconds(3))
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(seconds(6))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), "--demo") as running:
        yield running


def credentials(cluster: Cluster) -> dict[str, str]:
    lines = (cluster.data / "demo-credentials.txt").read_text().splitlines()
    return dict(line.split("\t") for line in lines)


def test_it_says_where_everything_listens(cluster: Cluster) -> None:
    output = cluster.output()
    assert f"http://127.0.0.1:{cluster.front}" in output
    for name, host in (("core-1", cluster.cores[0]), ("core-2", cluster.cores[1])):
        assert re.search(rf"{name}\s+gRPC {host}", output), output
    for name, host in (("edge-1", cluster.edges[0]), ("edge-2", cluster.edges[1])):
        assert re.search(rf"{name}\s+WebSocket {host}", output), output
    assert "(throwaway: removed on stop)" in output
    assert len(list(Path(tempfile.gettempdir()).glob(f"wac-cluster-*-{cluster.process.pid}-*"))) == 2
    # Every node runs, each started once.
    for name in ("core-1", "core-2", "edge-1", "edge-2", "envoy"):
        assert len(re.findall(rf"wac: started {name} \(pid \d+\)", output)) == 1, output


def test_sapi_requests_are_spread_over_both_cores(cluster: Cluster) -> None:
    before = cluster.requests("wac_core", cluster.cores)
    with httpx.Client(base_url=f"http://127.0.0.1:{cluster.front}", timeout=seconds()) as http:
        for _ in range(4):
            response = http.get("/sapi/v1/jwks")
            assert response.status_code == 200, response.text
            assert response.json()["keys"]
    after = cluster.requests("wac_core", cluster.cores)
    # Round robin on one client connection: strictly in turn.
    assert [now - then for now, then in zip(after, before, strict=True)] == [2, 2], (before, after)


def test_wapi_logins_go_through_both_edges_to_both_cores(cluster: Cluster) -> None:
    passwords = credentials(cluster)
    before = cluster.requests("wac_core", cluster.cores)
    with ExitStack() as held:
        sockets = [
            held.enter_context(connect(f"ws://127.0.0.1:{cluster.front}/wapi", open_timeout=seconds()))
            for _ in range(2)
        ]
        # Two held WebSockets: the second goes to the edge holding none.
        counters = cluster.counters()
        assert [counters[("wac_edge", host, "rq_active")] for host in cluster.edges] == ["1", "1"]
        for index, ws in enumerate(sockets):
            for attempt, username in enumerate(("alice", "bob")):
                request = {
                    "jsonrpc": "2.0",
                    "id": attempt + 1,
                    "method": "IdentityService.Login",
                    "params": {"username": username, "password": passwords[username]},
                }
                ws.send(json.dumps(request))
                answer = json.loads(ws.recv(timeout=seconds()))
                assert answer["id"] == attempt + 1 and answer["result"]["accessToken"], (index, answer)
    after = cluster.requests("wac_core", cluster.cores)
    # Each edge's calls alternate over the cores through the side door.
    assert all(now > then for now, then in zip(after, before, strict=True)), (before, after)
    output = cluster.output()
    assert output.count('"message": "login"') >= 4
    # Each core names itself on its lines: the merged output says who logged whom in.
    for core in ("core-1", "core-2"):
        assert f'"message": "login", "node": "{core}"' in output, output[-3000:]


def test_sigterm_stops_everything_and_removes_the_throwaway_servers(cluster: Cluster) -> None:
    output = cluster.output()
    database = re.search(r"postgresql\+asyncpg://wac@127\.0\.0\.1:(\d+)/wac", output)
    redis = re.search(r"redis://127\.0\.0\.1:(\d+)/0", output)
    assert database and redis, output
    pids = [int(pid) for pid in re.findall(r"wac: started \S+ \(pid (\d+)\)", output)]
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(seconds(6)) == 0, cluster.output()[-4000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in (int(database.group(1)), int(redis.group(1)), cluster.front):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=seconds()).close()
    assert not list(Path(tempfile.gettempdir()).glob(f"wac-cluster-*-{cluster.process.pid}-*")), "temp dirs left"


def test_given_servers_are_used_and_their_urls_not_shown(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    given = {"WAC_CORE_DATABASE_URL": postgres_url, "WAC_CLUSTER_REDIS_URL": redis_url}
    with running_cluster(tmp_path, env=given) as cluster:
        output = cluster.output()
        assert "throwaway" not in output, output
        assert postgres_url not in output and "(given)" in output, output
        assert not list(Path(tempfile.gettempdir()).glob(f"wac-cluster-*-{cluster.process.pid}-*"))
        cluster.process.send_signal(signal.SIGTERM)
        assert cluster.process.wait(seconds(6)) == 0, cluster.output()[-4000:]
