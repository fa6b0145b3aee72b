"""VerifyToken over real gRPC at concurrency 32, beside the standard health
check on the same server in the same run (the cheapest unary call there is).

Target: VerifyToken at no less than 70% of the health check's throughput.
The core runs as its own process (``wac core``) so that client and server do
not share one interpreter.

    .venv/bin/python bench/bench_identity.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import free_port  # noqa: E402

from wac.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def load(call, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        env = {**os.environ, "WAC_DATA_DIR": data, "WAC_CORE_LISTEN": f"127.0.0.1:{port}", "WAC_LOG_LEVEL": "warning"}
        wac = [sys.executable, "-m", "cli"]
        subprocess.run(
            [*wac, "admin", "subscriber", "add", "alice", "--password", "benchmark1"],
            env=env,
            check=True,
            capture_output=True,
        )
        created = subprocess.run(
            [*wac, "admin", "apikey", "create", "bench", "--scope", "identity.verify"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        core = subprocess.Popen([*wac, "core"], env=env, stderr=subprocess.DEVNULL)
        try:
            rows = asyncio.run(measure(port, key, args.concurrency, args.seconds))
        finally:
            core.terminate()
            core.wait(10)
    print(f"concurrency {args.concurrency}, {args.seconds:.0f} s each, core in its own process")
    print(f"{'call':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<26}{rate:>10.0f}{p50:>10.2f}{p99:>10.2f}")
    ratio = rows[1][1] / rows[0][1]
    print(f"VerifyToken / health check throughput: {ratio:.0%} (target >= 70%)")
    return 0


async def measure(port: int, key: str, concurrency: int, seconds: float) -> list[tuple[str, float, float, float]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        session = await identity.Login(identity_pb2.LoginRequest(username="alice", password="benchmark1"))
        metadata = (("authorization", f"Bearer {key}"),)
        verify_request = identity_pb2.VerifyTokenRequest(token=session.access_token)
        health_request = health_pb2.HealthCheckRequest()

        async def verify() -> None:
            reply = await identity.VerifyToken(verify_request, metadata=metadata)
            assert reply.active

        async def check() -> None:
            await health.Check(health_request)

        await load(check, concurrency, 1.0)  # warm-up
        await load(verify, concurrency, 1.0)
        rows = []
        for name, call in (("health check (baseline)", check), ("VerifyToken", verify)):
            rate, lat = await load(call, concurrency, seconds)
            rows.append((name, rate, percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3))
    return rows


if __name__ == "__main__":
    sys.exit(main())
