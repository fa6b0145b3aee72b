"""Call setup throughput and latency through the WAPI edge, with the core
(``wac core``) and the edge (``wac edge``) each in its own process.

At each load level of --pairs (one run per level, same processes), that
many caller/callee pairs, each device a WebSocket client that logged in
and subscribed to its events, run full call setups back to back for
--seconds: CreateCall, callInvited delivered to the callee, AnswerCall
(after --answer-delay ms, the scripted "user picks up"), callAnswered
delivered to the caller, HangupCall, callEnded delivered to the callee.

Reported: completed setups per second, and the setup latency, from
CreateCall sent to callAnswered received *minus* the scripted answer delay
(the time between callInvited received and AnswerCall sent), p50 and p99.
Beside them, the round-trip floor of the same path measured in the same
run: GetIceServers through edge and core (no database, no events), alone
and under the call load. Back-to-back setups saturate the core at some
level, where latency becomes queueing; the levels show the curve. Targets:
>= 400 setups/s with setup p99 < 50 ms at one of the levels, and the core's
CPU per set-up <= 2 ms.

Setup writes the subscribers directly through the identity store, with a
cheap argon2 hash (login cost is identity's benchmark, not this one). The
edge's per-connection rate limit is raised so that it does not pace the
few, busy benchmark connections.

    .venv/bin/python bench/bench_calls.py [--pairs 4,8,12,20] [--seconds 10]
        [--answer-delay 0] [--floor 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import free_port  # noqa: E402

from core.db.engine import create_engine  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.identity.store import IdentityStore, SubscriberRow  # noqa: E402
from settings.config import load_config  # noqa: E402

PASSWORD = "benchmark1"
# Issue 18 ("Performance"): a load level at >= 400 setups/s with p99 < 50 ms,
# and the core's CPU per set-up at most 2 ms.
TARGET_RATE = 400.0
TARGET_P99_MS = 50.0
TARGET_CORE_MS = 2.0
SDP = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:Bx7f\r\n"
    "a=ice-pwd:7ViO3nXIJZqUVbsk5Hd2yJ0n\r\n"
    "a=fingerprint:sha-256 1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:"
    "1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09\r\n"
    "a=setup:actpass\r\n"
    "a=mid:0\r\n"
    "a=sendrecv\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Client:
    """JSON-RPC over one WebSocket: responses by id, call events in a queue."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[tuple[str, dict[str, Any], float]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                now = time.perf_counter()
                message = json.loads(text)
                if "id" in message:
                    future = self._waiting.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("method") == "event":
                    for kind in ("callInvited", "callAnswered", "callEnded"):
                        if kind in message["params"]:
                            self.events.put_nowait((kind, message["params"][kind], now))

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        response = await asyncio.wait_for(future, 30)
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response["result"]

    async def expect(self, kind: str) -> tuple[dict[str, Any], float]:
        got, payload, at = await asyncio.wait_for(self.events.get(), 30)
        if got != kind:
            raise RuntimeError(f"expected {kind}, got {got}")
        return payload, at

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@contextlib.asynccontextmanager
async def device(url: str, username: str) -> AsyncIterator[Client]:
    async with connect(url, compression=None, open_timeout=30) as ws:
        client = Client(ws)
        await client.call("IdentityService.Login", {"username": username, "password": PASSWORD, "deviceName": "bench"})
        await client.call("EventsService.Subscribe", {})
        try:
            yield client
        finally:
            await client.close()


@dataclass
class Results:
    setups: int = 0
    latencies: list[float] = field(default_factory=list)
    floor_under_load: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # core, edge, this client (seconds)


async def setup_once(caller: Client, callee: Client, callee_name: str, delay: float, results: Results) -> None:
    sent = time.perf_counter()
    call = await caller.call("CallsService.CreateCall", {"callee": callee_name, "offer": {"type": "OFFER", "sdp": SDP}})
    if call["state"] != "RINGING":
        raise RuntimeError(f"call not ringing: {call}")
    call_id = call["callId"]
    _, invited_at = await callee.expect("callInvited")
    if delay:
        await asyncio.sleep(delay)
    answer_sent = time.perf_counter()
    await callee.call("CallsService.AnswerCall", {"callId": call_id, "answer": {"type": "ANSWER", "sdp": SDP}})
    _, answered_at = await caller.expect("callAnswered")
    await caller.call("CallsService.HangupCall", {"callId": call_id})
    ended, _ = await callee.expect("callEnded")
    if ended["reason"] != "COMPLETED":
        raise RuntimeError(f"ended {ended['reason']}")
    results.setups += 1
    results.latencies.append((answered_at - sent) - (answer_sent - invited_at))


async def phase(
    pairs: list[tuple[Client, Client, str]], seconds: float, delay: float, prober: Client | None
) -> tuple[Results, float]:
    """Every pair runs setups back to back for ``seconds``; the prober measures the floor meanwhile."""
    results = Results()
    stop = time.perf_counter() + seconds

    async def loop(caller: Client, callee: Client, callee_name: str) -> None:
        while time.perf_counter() < stop:
            try:
                await setup_once(caller, callee, callee_name, delay, results)
            except Exception as exc:  # counted and reported
                results.errors.append(repr(exc))
                return

    async def probe(client: Client) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await client.call("CallsService.GetIceServers", {})
            results.floor_under_load.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    started = time.perf_counter()
    work = [loop(*pair) for pair in pairs] + ([probe(prober)] if prober else [])
    await asyncio.gather(*work)
    return results, time.perf_counter() - started


async def floor(client: Client, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await client.call("CallsService.GetIceServers", {})
        samples.append(time.perf_counter() - started)
    return samples


async def populate(url: str, pairs: int) -> None:
    engine = create_engine(url)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    store = IdentityStore(engine)
    now = time.time()
    names = ["prober"] + [f"{role}{i}" for i in range(pairs) for role in ("caller", "callee")]
    for name in names:
        await store.create_subscriber(SubscriberRow(name, name.title(), (), "", ("user",), False, cheap, now, now))
    await engine.dispose()


async def wait_port(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as data:
        core_port, ws_port, http_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "WAC_DATA_DIR": data,
            "WAC_CORE_LISTEN": f"127.0.0.1:{core_port}",
            "WAC_EDGE_LISTEN": f"127.0.0.1:{ws_port}",
            "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core_port}",
            "WAC_EDGE_RATE_PER_SECOND": "100000",
            "WAC_EDGE_RATE_BURST": "100000",
            # The core limits each session too (its callers are few and busy).
            "WAC_CORE_RATE_PER_SECOND": "100000",
            "WAC_CORE_RATE_BURST": "100000",
            "WAC_LOG_LEVEL": "warning",
            # Every device logs in at once from 127.0.0.1: let them queue.
            "WAC_IDENTITY_LOGIN_QUEUE_PER_ADDRESS": "100000",
            "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "10000",
        }
        url = load_config(None, env).database_url
        await asyncio.to_thread(upgrade, url)
        levels = args.pairs
        await populate(url, max(levels))
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", name, env=env, cwd=ROOT, stderr=asyncio.subprocess.DEVNULL
            )
            for name in ("core", "edge")
        ]
        try:
            await wait_port(core_port)
            await wait_port(ws_port)
            ws_url = f"ws://127.0.0.1:{ws_port}/wapi"
            async with contextlib.AsyncExitStack() as stack:
                prober = await stack.enter_async_context(device(ws_url, "prober"))
                pairs = []
                for i in range(max(levels)):
                    caller = await stack.enter_async_context(device(ws_url, f"caller{i}"))
                    callee = await stack.enter_async_context(device(ws_url, f"callee{i}"))
                    pairs.append((caller, callee, f"callee{i}"))
                await floor(prober, 50)  # warm-up
                idle_floor = await floor(prober, args.floor)
                delay = args.answer_delay / 1000
                runs: list[tuple[int, Results, float]] = []
                for level in levels:
                    await phase(pairs[:level], min(2.0, args.seconds), delay, None)  # warm-up
                    before = [cpu_seconds(p.pid) for p in procs] + [time.process_time()]
                    results, elapsed = await phase(pairs[:level], args.seconds, delay, prober)
                    after = [cpu_seconds(p.pid) for p in procs] + [time.process_time()]
                    results.cpu = [b - a for a, b in zip(before, after, strict=True)]
                    runs.append((level, results, elapsed))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 10)
    return report(args, runs, idle_floor)


def report(args: argparse.Namespace, runs: list[tuple[int, Results, float]], idle_floor: list[float]) -> int:
    ms = 1e3
    print(
        f"Call setups through WAPI (1 core, 1 edge, {os.cpu_count()} CPUs): {args.seconds:.0f} s per level, "
        f"answer delay {args.answer_delay:.0f} ms"
    )
    print(
        f"floor: GetIceServers round trip, idle: p50 {percentile(idle_floor, 0.5) * ms:.1f} ms, "
        f"p99 {percentile(idle_floor, 0.99) * ms:.1f} ms"
    )
    print(
        f"{'pairs':>5}{'setups/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'floor p50':>11}{'floor p99':>11}{'core CPU':>10}{'ms/setup':>10}{'edge CPU':>10}{'errors':>8}"
    )
    met = False
    cheapest = float("inf")
    failed = False
    for level, results, elapsed in runs:
        rate = results.setups / elapsed
        lat, under = results.latencies, results.floor_under_load
        core, edge, _client = (seconds / elapsed * 100 for seconds in results.cpu)
        per_setup = results.cpu[0] / max(results.setups, 1) * ms
        p99 = percentile(lat, 0.99) * ms if lat else float("nan")
        print(
            f"{level:>5}{rate:>10.0f}{percentile(lat, 0.5) * ms if lat else float('nan'):>9.1f}{p99:>9.1f}"
            f"{max(lat) * ms if lat else float('nan'):>9.1f}"
            f"{percentile(under, 0.5) * ms if under else float('nan'):>11.1f}"
            f"{percentile(under, 0.99) * ms if under else float('nan'):>11.1f}"
            f"{core:>9.0f}%{per_setup:>10.2f}{edge:>9.0f}%{len(results.errors):>8}"
        )
        for error in results.errors[:3]:
            print(f"  {error}")
        met = met or (rate >= TARGET_RATE and p99 < TARGET_P99_MS and not results.errors)
        cheapest = min(cheapest, per_setup)
        failed = failed or bool(results.errors)
    print(
        "setup latency: CreateCall sent -> callAnswered received, minus the scripted answer delay; "
        "floor under load: GetIceServers during the setups"
    )
    print(
        f"target >= {TARGET_RATE:.0f} setups/s with p99 < {TARGET_P99_MS:.0f} ms at some load: "
        f"{'met' if met else 'NOT met'}"
    )
    print(
        f"target: core <= {TARGET_CORE_MS:g} ms CPU per set-up: best level {cheapest:.2f} ms, "
        f"{'met' if cheapest <= TARGET_CORE_MS else 'NOT met'}"
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pairs",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[4, 8, 12, 20],
        help="caller/callee pairs per load level, comma-separated (default 4,8,12,20)",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--answer-delay", type=float, default=0.0, help="scripted ms before answering")
    parser.add_argument("--floor", type=int, default=500, help="GetIceServers calls for the idle floor")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
