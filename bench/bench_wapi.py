"""The WAPI edge: call latency against the WebSocket floor, and the cost of
many idle connections. The core (``wac core``) and the edge (``wac edge``)
each run in their own process, so that their memory can be read from /proc.

1. Round trip. One authenticated WebSocket makes --calls sequential calls of
   a cheap method (PresenceService.GetPresence of oneself, and
   IdentityService.GetSubscriber of oneself), then --concurrency sockets
   call back to back for --seconds. The same JSON-RPC text is sent to a raw
   ``websockets`` echo server (its own process, same settings): the floor of
   a WebSocket round trip on this machine. The same call made directly over
   gRPC to the core shows what the core itself takes. Reported: p50, p99,
   calls/s, and WAPI p50 / echo p50. Target: within 3x of the echo floor.
2. Idle connections. --connections sockets (spread over --workers client
   processes) each log in as their own subscriber and subscribe to events,
   then sit idle. Reported: the edge's RSS growth per connection (target
   <= 60 KiB) and the core's. Then one subscriber who has them all as
   contacts (so they all see it) changes its presence --changes times; each change is one event
   to every connection. Reported: delay from SetPresence to arrival at each
   connection, p50 and p99 (target p99 < 1 s).

Setup writes subscribers and contacts directly through the stores, with a
cheap argon2 hash (login cost is identity's benchmark, not this one). The
per-connection rate limit is raised for part 1 only, where few sockets call
back to back.

    .venv/bin/python bench/bench_wapi.py [--calls 3000] [--concurrency 8]
        [--seconds 5] [--connections 5000] [--workers 2] [--changes 5]
        [--only latency|idle]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import (  # noqa: E402
    cpu_seconds,
    free_port,
    percentile,
    raise_open_files,
    rss_kib,
    table,
    wait_port,
)

PASSWORD = "benchmark1"
SUBJECT = "subject"
ME = "bench"
TARGET_RATIO = 3.0
TARGET_KIB_PER_CONNECTION = 60.0
TARGET_FANOUT_P99 = 1.0
# Sockets of the same settings as the edge's: no compression.
WS_OPTIONS: dict[str, Any] = {"compression": None, "max_size": 65536, "open_timeout": 60, "ping_interval": None}


def watcher(index: int) -> str:
    return f"w{index:05d}"


# -- processes ---------------------------------------------------------------------
def spawn(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT)


def environment(data_dir: Path, core_port: int, ws_port: int, http_port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WAC_DATA_DIR": str(data_dir),
        "WAC_CORE_LISTEN": f"127.0.0.1:{core_port}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{ws_port}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core_port}",
        "WAC_LOG_LEVEL": "warning",
        # Every client logs in at once from 127.0.0.1: let them queue.
        "WAC_IDENTITY_LOGIN_QUEUE_PER_ADDRESS": "100000",
        "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "10000",
        **extra,
    }


class Stack:
    """``wac core`` and ``wac edge`` on fresh ports and a fresh data directory."""

    def __init__(self, workdir: Path, **extra: str) -> None:
        # The core refuses a data dir other users can read (it holds the keys).
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.core_port, self.ws_port, self.http_port = free_port(), free_port(), free_port()
        self.env = environment(workdir, self.core_port, self.ws_port, self.http_port, **extra)
        self.url = f"sqlite+aiosqlite:///{workdir / 'wac.sqlite3'}"
        self.workdir = workdir
        self.core: subprocess.Popen[bytes] | None = None
        self.edge: subprocess.Popen[bytes] | None = None

    async def populate(self, watchers: int) -> None:
        sys.path.insert(0, str(ROOT))
        from core.contacts.store import ContactRow, SqlContactsStore
        from core.db.engine import create_engine
        from core.db.migrate import upgrade
        from core.db.work import dispose
        from core.identity.store import IdentityStore, SubscriberRow
        from settings.config import load_config

        config = load_config(None, self.env)
        await asyncio.to_thread(upgrade, config.database_url)
        engine = create_engine(config.database_url)
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
        identity, contacts = IdentityStore(engine), SqlContactsStore(engine)
        now = time.time()
        for username in [ME, SUBJECT, *map(watcher, range(watchers))]:
            row = SubscriberRow(username, username.title(), (), "", ("user",), False, cheap, now, now)
            await identity.create_subscriber(row)
        # The subject's contacts link the watchers: its consent that they see it.
        for index in range(watchers):
            name = watcher(index)
            row = ContactRow(f"c{index}", SUBJECT, name.title(), name, (), (), name, False, "", now, now)
            await contacts.create(row, limit=max(watchers, 1))
        await dispose(engine)

    async def start(self) -> None:
        if self.core is None:
            self.core = spawn("-m", "cli", "core", env=self.env)
        await wait_port(self.core_port)
        self.edge = spawn("-m", "cli", "edge", env=self.env)
        await wait_port(self.ws_port)

    def stop(self) -> None:
        for process in (self.edge, self.core):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# -- a minimal JSON-RPC client ----------------------------------------------------------
class Client:
    """Responses by id; event notifications handed to ``on_event`` with their arrival time."""

    def __init__(self, ws: ClientConnection, on_event: Callable[[dict[str, Any], float], None] | None = None) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._on_event = on_event
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                arrived = time.monotonic()
                message = json.loads(text)
                if "id" in message:
                    future = self._waiting.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("method") == "event" and self._on_event is not None:
                    self._on_event(message["params"], arrived)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        response = await asyncio.wait_for(future, 60)
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response["result"]

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@contextlib.asynccontextmanager
async def logged_in(port: int, username: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(f"ws://127.0.0.1:{port}/wapi", **WS_OPTIONS) as ws:
        client = Client(ws, **kwargs)
        await client.call("IdentityService.Login", {"username": username, "password": PASSWORD, "deviceName": "bench"})
        try:
            yield client
        finally:
            await client.close()


# -- part 1: round trip ----------------------------------------------------------------------
async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def run_echo_server(port: int) -> None:
    async with serve(echo, "127.0.0.1", port, compression=None, max_size=65536, ping_interval=None):
        await asyncio.Future()


async def run_stub_core(port: int) -> None:
    """A stand-in core: answers Login, GetSubscriber and GetPresence at once,
    with no auth, database or events, so that the edge's own cost shows."""
    import grpc

    from wac.v1 import identity_pb2, identity_pb2_grpc, presence_pb2, presence_pb2_grpc

    class Identity(identity_pb2_grpc.IdentityServiceServicer):
        async def Login(self, request: Any, context: Any) -> Any:
            subscriber = identity_pb2.Subscriber(username=request.username)
            return identity_pb2.Session(session_id="stub", access_token="stub-token", subscriber=subscriber)

        async def GetSubscriber(self, request: Any, context: Any) -> Any:
            return identity_pb2.Subscriber(username=request.username, display_name=request.username.title())

    class Presence(presence_pb2_grpc.PresenceServiceServicer):
        async def GetPresence(self, request: Any, context: Any) -> Any:
            return presence_pb2.Presence(
                username=request.username, status=presence_pb2.Presence.AVAILABLE, display_name="Bench"
            )

    server = grpc.aio.server()
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(Identity(), server)
    presence_pb2_grpc.add_PresenceServiceServicer_to_server(Presence(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def sequential(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    for _ in range(min(200, count)):  # warm-up: connections, caches, JIT-free but not cold
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(calls: list[Callable[[], Awaitable[Any]]], seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(call: Callable[[], Awaitable[Any]]) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(call) for call in calls))
    return done / (time.perf_counter() - started)


async def latency(args: argparse.Namespace, workdir: Path) -> tuple[list[list[object]], bool]:
    import grpc

    from wac.v1 import identity_pb2, identity_pb2_grpc, presence_pb2, presence_pb2_grpc

    # A few sockets call back to back: lift the per-socket (edge) and
    # per-session (core) rate limits, which would measure the limiter.
    stack = Stack(
        workdir,
        WAC_EDGE_RATE_PER_SECOND="1000000",
        WAC_EDGE_RATE_BURST="1000000",
        WAC_CORE_RATE_PER_SECOND="1000000",
        WAC_CORE_RATE_BURST="1000000",
    )
    await stack.populate(0)
    echo_port = free_port()
    echo_server = spawn(__file__, "--echo-server", str(echo_port))
    rows: list[list[object]] = []
    try:
        await stack.start()
        await wait_port(echo_port)
        probes = [
            ("PresenceService.GetPresence", {"username": ME}),
            ("IdentityService.GetSubscriber", {"username": ME}),
        ]
        text = json.dumps({"jsonrpc": "2.0", "id": 1, "method": probes[0][0], "params": probes[0][1]})

        async with connect(f"ws://127.0.0.1:{echo_port}", **WS_OPTIONS) as floor_ws:

            async def floor_call(ws: ClientConnection = floor_ws) -> None:
                await ws.send(text)
                await ws.recv()

            echo_samples = await sequential(floor_call, args.calls)
            sockets = [await connect(f"ws://127.0.0.1:{echo_port}", **WS_OPTIONS) for _ in range(args.concurrency)]

            def echo_caller(ws: ClientConnection) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    await ws.send(text)
                    await ws.recv()

                return call

            echo_rate = await throughput([echo_caller(ws) for ws in sockets], args.seconds)
            for ws in sockets:
                await ws.close()
        echo_p50 = percentile(echo_samples, 0.5)
        rows.append(["websockets echo (floor)", echo_p50 * 1e3, percentile(echo_samples, 0.99) * 1e3, echo_rate, 1.0])

        ok = True
        async with logged_in(stack.ws_port, ME) as client:
            # Answered by the edge alone (-32601): parse, look up, answer.
            unknown = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "No.Such", "params": {}})

            async def edge_only(ws: ClientConnection = client.ws) -> None:
                waiter = asyncio.get_running_loop().create_future()
                client._waiting[1] = waiter
                await ws.send(unknown)
                await waiter

            samples = await sequential(edge_only, args.calls)
            p50 = percentile(samples, 0.5)
            rows.append(["WAPI, edge alone (-32601)", p50 * 1e3, percentile(samples, 0.99) * 1e3, float("nan"),
                         p50 / echo_p50])  # fmt: skip

        # The edge in front of a stand-in core that answers at once: the
        # edge's cost including its gRPC hop, without the core's.
        stub_port, stub_ws, stub_http = free_port(), free_port(), free_port()
        stub = spawn(__file__, "--stub-core", str(stub_port))
        stub_env = environment(workdir, stub_port, stub_ws, stub_http, WAC_EDGE_RATE_PER_SECOND="1000000",
                               WAC_EDGE_RATE_BURST="1000000")  # fmt: skip
        stub_edge = None
        try:
            await wait_port(stub_port)
            stub_edge = spawn("-m", "cli", "edge", env=stub_env)
            await wait_port(stub_ws)
            async with contextlib.AsyncExitStack() as exits:
                clients = [await exits.enter_async_context(logged_in(stub_ws, ME)) for _ in range(args.concurrency)]
                method, params = probes[0]
                samples = await sequential(lambda: clients[0].call(method, params), args.calls)
                rate = await throughput([lambda c=c: c.call(method, params) for c in clients], args.seconds)
                p50 = percentile(samples, 0.5)
                rows.append([f"WAPI {method}, stand-in core", p50 * 1e3, percentile(samples, 0.99) * 1e3, rate,
                             p50 / echo_p50])  # fmt: skip
                edge_ratio = p50 / echo_p50
            # The gRPC hop alone: this process calls the stand-in core directly.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{stub_port}") as channel:
                stub_presence = presence_pb2_grpc.PresenceServiceStub(channel)
                request = presence_pb2.GetPresenceRequest(username=ME)
                samples = await sequential(lambda: stub_presence.GetPresence(request), args.calls)
                rate = await throughput([lambda: stub_presence.GetPresence(request)] * args.concurrency, args.seconds)
                p50 = percentile(samples, 0.5)
                rows.append([f"gRPC direct {method}, stand-in core", p50 * 1e3, percentile(samples, 0.99) * 1e3,
                             rate, p50 / echo_p50])  # fmt: skip
        finally:
            for process in (stub_edge, stub):
                if process is not None:
                    process.terminate()
                    process.wait()

        async with contextlib.AsyncExitStack() as exits:
            clients = [await exits.enter_async_context(logged_in(stack.ws_port, ME)) for _ in range(args.concurrency)]
            for method, params in probes:
                samples = await sequential(lambda m=method, p=params: clients[0].call(m, p), args.calls)
                rate = await throughput([lambda c=c, m=method, p=params: c.call(m, p) for c in clients], args.seconds)
                p50 = percentile(samples, 0.5)
                rows.append([f"WAPI {method}", p50 * 1e3, percentile(samples, 0.99) * 1e3, rate, p50 / echo_p50])

        # The same calls straight to the core over gRPC: what the core and a
        # Python gRPC client take, without the edge.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.core_port}") as channel:
            session = await identity_pb2_grpc.IdentityServiceStub(channel).Login(
                identity_pb2.LoginRequest(username=ME, password=PASSWORD)
            )
            metadata = (("authorization", f"Bearer {session.access_token}"),)
            presence = presence_pb2_grpc.PresenceServiceStub(channel)
            identity = identity_pb2_grpc.IdentityServiceStub(channel)
            direct = {
                "PresenceService.GetPresence": lambda: presence.GetPresence(
                    presence_pb2.GetPresenceRequest(username=ME), metadata=metadata
                ),
                "IdentityService.GetSubscriber": lambda: identity.GetSubscriber(
                    identity_pb2.GetSubscriberRequest(username=ME), metadata=metadata
                ),
            }
            for method, call in direct.items():
                samples = await sequential(call, args.calls)
                rate = await throughput([call] * args.concurrency, args.seconds)
                p50 = percentile(samples, 0.5)
                rows.append([f"gRPC direct {method}", p50 * 1e3, percentile(samples, 0.99) * 1e3, rate, p50 / echo_p50])
        # The target is on what the edge adds: with the real core, the core's
        # own time per call (shown by the direct gRPC rows) dominates.
        ok = edge_ratio <= TARGET_RATIO
    finally:
        echo_server.terminate()
        echo_server.wait()
        stack.stop()
    return rows, ok


# -- part 2: idle connections --------------------------------------------------------------
async def worker(port: int, first: int, count: int) -> None:
    """A client process: ``count`` watchers connect, log in, subscribe, then wait for commands."""
    raise_open_files(count + 256)
    arrivals: dict[str, list[float]] = {}
    failures: list[str] = []

    def on_event(event: dict[str, Any], arrived: float) -> None:
        presence = event.get("presenceChanged")
        if presence and presence.get("username") == SUBJECT:
            arrivals.setdefault(presence.get("note", ""), []).append(arrived)

    clients: list[Client] = []
    gate = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with gate:
            try:
                ws = await connect(f"ws://127.0.0.1:{port}/wapi", **WS_OPTIONS)
                client = Client(ws, on_event)
                await client.call(
                    "IdentityService.Login", {"username": watcher(index), "password": PASSWORD, "deviceName": "idle"}
                )
                await client.call("EventsService.Subscribe", {})
                clients.append(client)
            except Exception as exc:
                failures.append(repr(exc)[:200])

    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    gc.collect()
    # One process holds thousands of clients here (a browser holds one): its
    # own full collections would be counted as delivery time.
    gc.freeze()
    print(json.dumps({"ready": len(clients), "failures": failures[:3], "failed": len(failures)}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "report":
            print(json.dumps({"arrivals": arrivals}), flush=True)
        elif line.startswith("count "):
            print(json.dumps({"count": len(arrivals.get(line.removeprefix("count "), []))}), flush=True)
        elif line == "quit":
            break
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def quiesce(pids: list[int], *, busy: float = 0.05, limit: float = 120.0) -> float:
    """Seconds until every process used less than ``busy`` of a CPU over one second."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        before = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(1.0)
        if all(cpu_seconds(pid) - used < busy for pid, used in zip(pids, before, strict=True)):
            break
    return time.perf_counter() - started


async def idle(args: argparse.Namespace, workdir: Path) -> tuple[list[list[object]], list[list[object]], bool]:
    # Every socket comes from 127.0.0.1 here: lift the per-address cap and
    # the core's per-address call rate (every Login is anonymous, from that
    # one address: without it hundreds of sockets never log in), and give
    # thousands of logins on a busy machine time to finish.
    stack = Stack(
        workdir,
        WAC_EDGE_MAX_CONNECTIONS_PER_ADDRESS=str(args.connections + 100),
        WAC_EDGE_AUTH_DEADLINE="120",
        WAC_CORE_RATE_PER_SECOND="1000000",
        WAC_CORE_RATE_BURST="1000000",
    )
    print(f"setup: {args.connections} subscribers and contacts ...", flush=True)
    started = time.perf_counter()
    await stack.populate(args.connections)
    print(f"setup: done in {time.perf_counter() - started:.0f} s", flush=True)
    workers: list[asyncio.subprocess.Process] = []
    try:
        await stack.start()
        assert stack.core is not None and stack.edge is not None
        async with logged_in(stack.ws_port, SUBJECT) as subject:
            await subject.call("EventsService.Subscribe", {})
            await asyncio.sleep(2)
            edge_before, core_before = rss_kib(stack.edge.pid), rss_kib(stack.core.pid)
            edge_cpu, core_cpu = cpu_seconds(stack.edge.pid), cpu_seconds(stack.core.pid)
            share = -(-args.connections // args.workers)
            started = time.perf_counter()
            for first in range(0, args.connections, share):
                count = min(share, args.connections - first)
                argv = [__file__, "--worker", str(stack.ws_port), str(first), str(count)]
                process = await asyncio.create_subprocess_exec(
                    sys.executable, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, limit=1 << 26
                )
                workers.append(process)
            ready = 0
            for process in workers:
                assert process.stdout is not None
                status = json.loads(await process.stdout.readline())
                ready += status["ready"]
                if status["failed"]:
                    print(f"worker: {status['failed']} connections failed, e.g. {status['failures']}", flush=True)
            ramp = time.perf_counter() - started
            print(f"connected and subscribed: {ready} in {ramp:.1f} s", flush=True)
            # Idle means idle: wait until neither process still works through
            # the ramp-up (presence writes, coalescing) before measuring.
            quiet = await quiesce([stack.edge.pid, stack.core.pid])
            print(f"settled after {quiet:.0f} s", flush=True)
            edge_after, core_after = rss_kib(stack.edge.pid), rss_kib(stack.core.pid)
            per_edge = (edge_after - edge_before) / max(ready, 1)
            per_core = (core_after - core_before) / max(ready, 1)
            ramp_cpu = (cpu_seconds(stack.edge.pid) - edge_cpu, cpu_seconds(stack.core.pid) - core_cpu)

            async def collect() -> dict[str, list[float]]:
                arrivals: dict[str, list[float]] = {}
                for process in workers:
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write(b"report\n")
                    await process.stdin.drain()
                    for note, times in json.loads(await process.stdout.readline())["arrivals"].items():
                        arrivals.setdefault(note, []).extend(times)
                return arrivals

            async def count(note: str) -> int:
                total = 0
                for process in workers:
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.write(f"count {note}\n".encode())
                    await process.stdin.drain()
                    total += json.loads(await process.stdout.readline())["count"]
                return total

            # One change at a time: the next starts once every socket has
            # the last one and both processes are idle again, so that each
            # measures a fan-out on its own, not a queue of them.
            sent: dict[str, float] = {}
            fan_cpu = (0.0, 0.0)
            for change in range(args.changes):
                note = f"change-{change}"
                status = "AWAY" if change % 2 == 0 else "AVAILABLE"
                cpu = (cpu_seconds(stack.edge.pid), cpu_seconds(stack.core.pid))
                sent[note] = time.monotonic()
                await subject.call("PresenceService.SetPresence", {"status": status, "note": note})
                for _ in range(120):  # 30 s at most
                    await asyncio.sleep(0.25)
                    if await count(note) >= ready:
                        break
                fan_cpu = (
                    fan_cpu[0] + cpu_seconds(stack.edge.pid) - cpu[0],
                    fan_cpu[1] + cpu_seconds(stack.core.pid) - cpu[1],
                )
                await quiesce([stack.edge.pid, stack.core.pid], limit=10)
            arrivals = await collect()
            delays = [t - sent[note] for note in sent for t in arrivals.get(note, [])]
            delivered = {note: len(arrivals.get(note, [])) for note in sent}
        memory = [
            ["edge (wac edge)", edge_before, edge_after, per_edge],
            ["core (wac core)", core_before, core_after, per_core],
        ]

        def row(label: str, samples: list[float], count: int) -> list[object]:
            top = max(samples) * 1e3 if samples else float("nan")
            return [label, count, percentile(samples, 0.5) * 1e3, percentile(samples, 0.99) * 1e3, top]

        fanout = [row(note, [t - sent[note] for t in arrivals.get(note, [])], delivered[note]) for note in sent]
        fanout.append(row(f"all {args.changes}", delays, min(delivered.values()) if delivered else 0))
        print(f"ramp-up CPU: edge {ramp_cpu[0]:.1f} s, core {ramp_cpu[1]:.1f} s", flush=True)
        events = max(1, args.changes * ready)
        print(
            f"fan-out CPU per event delivered: edge {fan_cpu[0] / events * 1e6:.0f} us, "
            f"core {fan_cpu[1] / events * 1e6:.0f} us",
            flush=True,
        )
        ok = (
            per_edge <= TARGET_KIB_PER_CONNECTION
            and percentile(delays, 0.99) < TARGET_FANOUT_P99
            and min(delivered.values()) == ready == args.connections
        )
        return memory, fanout, ok
    finally:
        for process in workers:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                process.stdin.write(b"quit\n")
                await process.stdin.drain()
        for process in workers:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
        stack.stop()


async def main_async(args: argparse.Namespace) -> int:
    raise_open_files(args.connections + 4096)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-wapi-") as tmp:
        if args.only in (None, "latency"):
            rows, passed = await latency(args, Path(tmp) / "latency")
            ok &= passed
            print()
            print(
                table(
                    ["path", "p50 ms", "p99 ms", "calls/s", "p50 / floor"],
                    rows,
                    f"1. Round trip: {args.calls} sequential calls, then {args.concurrency} sockets "
                    f"for {args.seconds:g} s (target: WAPI GetPresence p50 <= {TARGET_RATIO:g}x floor)",
                )
            )
        if args.only in (None, "idle"):
            memory, fanout, passed = await idle(args, Path(tmp) / "idle")
            ok &= passed
            print()
            print(
                table(
                    ["process", "RSS before KiB", "RSS after KiB", "KiB / connection"],
                    memory,
                    f"2. {args.connections} idle authenticated sockets with events subscribed "
                    f"(target: edge <= {TARGET_KIB_PER_CONNECTION:g} KiB per connection)",
                )
            )
            print()
            print(
                table(
                    ["change", "delivered", "p50 ms", "p99 ms", "max ms"],
                    fanout,
                    f"   One presence event to every socket (target: p99 < {TARGET_FANOUT_P99 * 1e3:g} ms)",
                )
            )
    print()
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--only", choices=["latency", "idle"])
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stub-core", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(run_echo_server(args.echo_server))
        return 0
    if args.stub_core:
        asyncio.run(run_stub_core(args.stub_core))
        return 0
    if args.worker:
        asyncio.run(worker(*args.worker))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
