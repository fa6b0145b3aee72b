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
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from settings import status
from tests.support.cli import ROOT
from tests.support.timing import seconds
from tests.support.wac_cluster import Cluster, running_cluster


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


def test_wac_status_shows_every_node(cluster: Cluster) -> None:
    env = {**os.environ, "WAC_DATA_DIR": str(cluster.data), "WAC_ENVOY_LISTEN": f"127.0.0.1:{cluster.front}"}
    env.pop("WAC_CONFIG", None)

    def shown() -> dict[str, Any]:
        shown = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds(2),
            check=False,
        )
        assert shown.returncode == 0, shown.stdout + shown.stderr
        document: dict[str, Any] = json.loads(shown.stdout)
        return document

    # The nodes write their status files every 2 s (settings/status.py): a
    # socket an earlier test closed can still be counted for that long.
    deadline = time.monotonic() + 3 * status.INTERVAL
    document = shown()
    while document["sockets"] and time.monotonic() < deadline:
        time.sleep(0.2)
        document = shown()
    assert document["ready"] and document["failed"] == {}, document
    children = {child["role"]: child for child in document["children"]}
    assert set(children) == {"core-1", "core-2", "edge-1", "edge-2", "envoy"}
    for name, child in children.items():
        assert child["state"] == "running" and child["pid"] == cluster.pid(name), child
    assert children["core-2"]["listen"] == [cluster.cores[1]]
    assert children["edge-2"]["listen"][0] == cluster.edges[1]
    assert document["database"].startswith("postgresql 127.0.0.1:"), document
    assert document["sockets"] == 0 and document["active_calls"] == 0, document


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
