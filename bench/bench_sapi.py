"""SAPI through Envoy against direct gRPC: identity:verify over HTTP/1.1
keep-alive through the front door, beside the same VerifyToken made over
gRPC straight to the core, in the same run, at the same concurrency.

Targets: Envoy REST at >= 90% of direct gRPC's throughput, and its p99
within 1.2x of direct gRPC's. Also reported: Envoy's resident memory idle
(LIVE, no traffic yet) and at its peak under load (VmRSS, sampled), and the
CPU each process spent per thousand requests, which says where the time goes.
A third load, native gRPC through Envoy, is no target: beside REST it
separates Envoy's cost as a proxy from the transcoder's.

The core (``wac core``), Envoy (rendered from envoy/envoy.yaml.tmpl, run
as its own process) and the load generator (this script again, with
--load) are separate processes. The load generator is kept cheap: REST
requests are prebuilt bytes written on raw asyncio streams, one keep-alive
connection per worker; gRPC is one grpc.aio channel (HTTP/2, multiplexed),
as the WAPI edge and bench_identity use it. Rounds alternate between the
two so that a drift of the machine affects both alike.

    .venv/bin/python bench/bench_sapi.py [--seconds 5] [--concurrency 32]
        [--rounds 2] [--envoy-concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import cpu_seconds, free_port, percentile, rss_kib, table, wait_port  # noqa: E402

from cli import envoy  # noqa: E402
from wac.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402

PASSWORD = "benchmark1"
TARGET_THROUGHPUT = 0.90
TARGET_P99 = 1.2
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


# -- the load generator (a process of its own) -------------------------------------
async def rest_load(port: int, key: str, token: str, concurrency: int, seconds: float) -> list[float]:
    body = json.dumps({"token": token}).encode()
    request = (
        "POST /sapi/v1/identity:verify HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = CONTENT_LENGTH.search(head)
                if not head.startswith(b"HTTP/1.1 200") or length is None:
                    raise RuntimeError(f"unexpected answer: {head[:200]!r}")
                answer = await reader.readexactly(int(length.group(1)))
                latencies.append(time.perf_counter() - started)
                if not answer.startswith(b'{"active":true'):
                    raise RuntimeError(f"token not active: {answer[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def grpc_load(port: int, key: str, token: str, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        verify = identity_pb2_grpc.IdentityServiceStub(channel).VerifyToken
        request = identity_pb2.VerifyTokenRequest(token=token)
        metadata = (("authorization", f"Bearer {key}"),)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                reply = await verify(request, metadata=metadata)
                latencies.append(time.perf_counter() - started)
                if not reply.active:
                    raise RuntimeError(f"token not active: {reply}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def run_load(args: argparse.Namespace) -> int:
    """--load MODE: drive one load for --seconds and print the result as JSON.

    The API key and the token come on stdin, not the command line, which
    every user of the machine can read.
    """
    load = rest_load if args.load == "rest" else grpc_load
    secrets = json.load(sys.stdin)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    latencies = asyncio.run(load(args.port, secrets["key"], secrets["token"], args.concurrency, args.seconds))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "latencies": latencies}))
    return 0


# -- the orchestrator ------------------------------------------------------------
@dataclass
class Totals:
    """One way of calling, summed over the rounds."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    core_cpu: float = 0.0
    envoy_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def per_thousand(self, cpu: float) -> float:
        """CPU milliseconds per thousand requests."""
        return cpu * 1e6 / len(self.latencies)


class RssSampler:
    """Samples a process's VmRSS every 50 ms in a thread; the peak seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def envoy_connections(admin_port: int) -> tuple[int, int]:
    """Connections Envoy accepted from clients and opened to the core so far
    (keep-alive means a handful per load, not one per request)."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=(downstream_cx_total|wac_core.upstream_cx_total)$"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats = dict(line.split(": ", 1) for line in response.read().decode().splitlines() if ": " in line)
    return int(stats["http.front_door.downstream_cx_total"]), int(stats["cluster.wac_core.upstream_cx_total"])


def cli(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def access_token(core_port: int) -> str:
    """Alice logs in once; every request of the benchmark verifies this token."""
    with grpc.insecure_channel(f"127.0.0.1:{core_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        request = identity_pb2.LoginRequest(username="alice", password=PASSWORD, device_name="bench")
        return str(identity.Login(request).access_token)


def drive(mode: str, port: int, key: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--load", mode, "--port", str(port),
        "--concurrency", str(args.concurrency), "--seconds", str(args.seconds),
    ]  # fmt: skip
    secrets = json.dumps({"key": key, "token": token})
    done = subprocess.run(command, cwd=ROOT, input=secrets, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def measure(
    mode: str, port: int, key: str, token: str, args: argparse.Namespace, core: int, front: int, totals: Totals
) -> int:
    """One timed load; adds to totals and returns Envoy's peak RSS meanwhile."""
    sampler = RssSampler(front)
    core_before, envoy_before = cpu_seconds(core), cpu_seconds(front)
    result = drive(mode, port, key, token, args)
    totals.core_cpu += cpu_seconds(core) - core_before
    totals.envoy_cpu += cpu_seconds(front) - envoy_before
    totals.latencies += result["latencies"]
    totals.elapsed += result["elapsed"]
    totals.client_cpu += result["cpu"]
    return sampler.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed load")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="timed loads of each kind, alternated")
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=envoy.NODE_WORKERS,
        help="Envoy workers, as envoy.workers (default: wac run's, 1)",
    )
    parser.add_argument("--load", choices=("rest", "grpc"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return run_load(args)

    with tempfile.TemporaryDirectory() as data:
        core_port, front_port, admin_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WAC_DATA_DIR": data,
            "WAC_CORE_LISTEN": f"127.0.0.1:{core_port}",
            "WAC_LOG_LEVEL": "warning",
        }
        cli(env, "admin", "subscriber", "add", "alice", "--password", PASSWORD)
        key = cli(env, "admin", "apikey", "create", "bench", "--scope", "identity.verify")
        config = Path(data) / "envoy.yaml"
        # The edge is not running: no request of this benchmark goes there.
        config.write_text(
            envoy.render_config(
                listen_port=front_port,
                core_address=f"127.0.0.1:{core_port}",
                edge_address=f"127.0.0.1:{free_port()}",
                edge_http_address=f"127.0.0.1:{free_port()}",
                admin_port=admin_port,
            )
        )
        core = subprocess.Popen([sys.executable, "-m", "cli", "core"], env=env, cwd=ROOT)
        front = subprocess.Popen(
            envoy.envoy_command(config, log_level="error", concurrency=args.envoy_concurrency), cwd=ROOT
        )
        try:
            asyncio.run(wait_port(core_port))
            envoy.wait_until_live(front, admin_port)
            token = access_token(core_port)
            time.sleep(1.0)
            idle_rss = rss_kib(front.pid)
            loads = {
                "gRPC direct to the core": ("grpc", core_port),
                "REST through Envoy": ("rest", front_port),
                # Not a target: Envoy's share without the transcoder.
                "gRPC through Envoy": ("grpc", front_port),
            }
            totals = {name: Totals() for name in loads}
            # Warm-up: connections, the core's caches, Envoy's buffers.
            for mode, port in loads.values():
                drive(mode, port, key, token, argparse.Namespace(**{**vars(args), "seconds": 1.0}))
            peak_rss = idle_rss
            for _ in range(args.rounds):
                for name, (mode, port) in loads.items():
                    peak = measure(mode, port, key, token, args, core.pid, front.pid, totals[name])
                    peak_rss = max(peak_rss, peak)
            connections = envoy_connections(admin_port)
        finally:
            for process in (front, core):
                process.terminate()
            for process in (front, core):
                process.wait(10)

    report(args, totals, idle_rss, peak_rss, connections)
    return 0


def report(
    args: argparse.Namespace, totals: dict[str, Totals], idle_rss: int, peak_rss: int, connections: tuple[int, int]
) -> None:
    workers = args.envoy_concurrency or os.cpu_count()
    print(
        f"identity:verify / VerifyToken, concurrency {args.concurrency}, {args.rounds} x {args.seconds:.0f} s each, "
        f"{os.cpu_count()} CPUs, Envoy workers {workers}; core, Envoy and load generator in separate processes"
    )
    # Every process here competes for the same CPUs: anything else running
    # (the 1-minute load average, after the run) skews the figures.
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    rows = [
        (
            name,
            len(load.latencies),
            load.rate,
            percentile(load.latencies, 0.50) * 1e3,
            percentile(load.latencies, 0.99) * 1e3,
            load.per_thousand(load.core_cpu),
            load.per_thousand(load.envoy_cpu),
            load.per_thousand(load.client_cpu),
        )
        for name, load in totals.items()
    ]
    headers = ("path", "requests", "req/s", "p50 ms", "p99 ms", "core CPU ms/1k", "Envoy CPU ms/1k", "client CPU ms/1k")
    print(table(headers, rows))
    direct, rest = totals["gRPC direct to the core"], totals["REST through Envoy"]
    throughput = rest.rate / direct.rate
    p99 = percentile(rest.latencies, 0.99) / percentile(direct.latencies, 0.99)
    print()
    verdict = "met" if throughput >= TARGET_THROUGHPUT else "MISSED"
    print(f"REST / gRPC throughput: {throughput:.0%} (target >= {TARGET_THROUGHPUT:.0%}: {verdict})")
    verdict = "met" if p99 <= TARGET_P99 else "MISSED"
    print(f"REST / gRPC p99:        {p99:.2f}x (target <= {TARGET_P99}x: {verdict})")
    print(f"Envoy RSS: idle {idle_rss / 1024:.1f} MiB, peak under load {peak_rss / 1024:.1f} MiB")
    requests = sum(len(load.latencies) for name, load in totals.items() if "Envoy" in name)
    print(
        f"Envoy connections: {connections[0]:,} from clients, {connections[1]:,} to the core, "
        f"for {requests:,} timed requests (and the warm-up's)"
    )


if __name__ == "__main__":
    sys.exit(main())
