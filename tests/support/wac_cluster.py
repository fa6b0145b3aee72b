"""`wac cluster` run as a child of a test: two cores and two edges behind
Envoy, on free ports, stopped after. Shared by the cluster command's tests
and the fault tests, which kill its nodes.

Which core or edge served is read from Envoy's per-endpoint counters (its
admin /clusters); which process is which node from the supervisor's
"wac: started NAME (pid N)" lines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.sync.client import connect

from cli import envoy
from cli.throwaway import consecutive_free_ports
from tests.support.cli import ROOT
from tests.support.passwords import TEST_ARGON2
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
        return envoy.endpoint_stats(self.admin_socket, timeout=seconds())

    def pid(self, node: str) -> int:
        """The process now running ``node`` (core-1, edge-2...): the latest
        the supervisor started under that name (it restarts a dead one)."""
        started = re.findall(rf"wac: started {re.escape(node)} \(pid (\d+)\)", self.output())
        assert started, f"{node} was never started:\n{self.output()[-3000:]}"
        return int(started[-1])

    def kill(self, node: str) -> int:
        """SIGKILL ``node``'s process, as a crash would end it: nothing
        released, nothing flushed. Its pid."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        return pid

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
        **TEST_ARGON2,
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
