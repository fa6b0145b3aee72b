"""The embedded node against the local cluster, in one run on this machine:
call set-ups (bench_calls' workload) and one presence event to many
sockets (bench_wapi's fan-out), then a sizing estimate derived from what
was measured.

The two deployments, each on servers of the bench's own:

- embedded: one ``wac core`` and one ``wac edge`` process on SQLite, the
  clients straight to the edge (as bench_calls and bench_wapi run them);
- cluster: ``wac cluster`` (2 cores, 2 edges, Envoy in front) on a
  throwaway PostgreSQL and Redis started here (cli/throwaway.py), the
  clients through Envoy's front door, which spreads the WebSockets over the
  two edges.

1. Call set-ups. At each level of --pairs, that many caller/callee pairs run
   full set-ups back to back for --seconds (bench_calls' ``phase``: create,
   invited, answer, answered, hang up, ended). Reported: set-ups/s, p50 and
   p99 of the set-up latency, the ratio cluster / embedded of the best
   rates at p99 < 100 ms, and per set-up: the CPU time of each process
   (cores, edges, Envoy, Redis, PostgreSQL's backends), Redis commands,
   PostgreSQL write transactions (transaction ids assigned) and WAL bytes.
   Target: the cluster's best rate >= 1.3x the embedded node's, both at
   p99 < 100 ms.
2. Fan-out. --sockets watchers (in --workers client processes, bench_wapi's
   ``worker``) log in and subscribe, all watching one subject (they are its
   contacts), then the subject changes its presence --changes times, one
   change at a time. Reported: delivery delay from SetPresence sent to each
   socket, p50/p99/max; on the cluster, the sockets each edge holds (Envoy's
   rq_active). Beside it, the cost of the connected sessions: RSS per socket
   (edges, cores), Redis memory and commands per session, and the idle cost
   per connected user (CPU and Redis commands per second over a quiet
   window, minus the same window measured before the sockets connected).
   Target: p99 < 1 s on the cluster.

Sizing: for --users connected users and --rate set-ups/s (defaults 100,000
and 500), from the cluster's measured per-operation costs (the embedded
node's when the cluster completed no set-up, said so in the output):

    changes/s      = users x presence changes per user per hour / 3600
    deliveries/s   = changes/s x watchers per user
    core CPU       = rate x core CPU per set-up + users x idle core CPU per user
                     + changes/s x CPU of a change nobody watches
                     + deliveries/s x CPU per socket reached beyond that
    cores          = ceil(core CPU / utilisation)  (a core process uses one CPU at most)
    edge CPU       = the same with the edges' figures; edges = max(ceil(edge CPU /
                     utilisation), ceil(users x edge RSS per socket / memory per edge))
    Redis ops/s    = the same terms with Redis commands (per set-up, idle per user,
                     per change, per delivery)
    Redis memory   = users x bytes per session + rate x mean call length x bytes per
                     call in progress (measured: every pair's call answered and held)
    PostgreSQL     = rate x write transactions per set-up + changes/s x write
                     transactions per change (and the same for WAL bytes)

The costs of a change are net of the idle traffic (heartbeats, keep-alives)
measured over a quiet window with every socket connected.

The assumptions (changes per hour, watchers, utilisation, memory per edge,
call length) are options, printed with the estimate. One machine's two CPUs
run the clients too: the figures are per-operation costs on this machine,
not a cluster's capacity. Most of a run's time goes to logging the
sockets in, twice (each log-in costs the cores some 20-30 ms of CPU).

    .venv/bin/python bench/bench_cluster.py [--pairs 8,16] [--seconds 10]
        [--sockets 5000] [--workers 2] [--changes 1] [--only calls|fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import bench_calls  # noqa: E402
import bench_wapi  # noqa: E402
from common import cpu_seconds, free_port, percentile, raise_open_files, rss_kib, table, wait_port  # noqa: E402

from cli import envoy, throwaway  # noqa: E402

PASSWORD = bench_calls.PASSWORD
SUBJECT = bench_wapi.SUBJECT
TARGET_RATIO = 1.3
TARGET_SETUP_P99 = 0.100
TARGET_FANOUT_P99 = 1.0
# Seconds of a quiet window over which the idle cost is measured.
IDLE_WINDOW = 5.0


STARTED = time.monotonic()


def progress(message: str) -> None:
    """A line on the way, with the seconds since the start (the report comes at the end)."""
    print(f"[{time.monotonic() - STARTED:4.0f} s] {message}", flush=True)


# -- what is measured around each phase -----------------------------------------------------
@dataclass
class Sample:
    """The counters of every process and server at one moment."""

    at: float
    cpu: dict[str, float]
    # NaN where there is no such server (the embedded node): shown as "-".
    redis_commands: float = math.nan
    redis_memory: float = math.nan
    redis_cpu: float = math.nan
    pg_xact: float = math.nan
    pg_wal: float = math.nan
    pg_cpu: dict[int, float] | None = None
    # CPU seconds the whole machine spent (every process, this one's clients
    # included): how much of its CPUs a deployment left unused.
    machine: float = math.nan


@dataclass
class Delta:
    """What happened between two samples."""

    seconds: float
    cpu: dict[str, float]
    redis_commands: float
    redis_memory: float
    redis_cpu: float
    pg_xact: float
    pg_wal: float
    pg_cpu: float
    machine: float = math.nan

    def busy(self) -> float:
        """The share of the machine's CPUs in use over the interval."""
        return self.machine / (self.seconds * (os.cpu_count() or 1)) if self.seconds else math.nan

    def role_cpu(self, role: str) -> float:
        """CPU seconds of every process of a role (core, edge, envoy)."""
        return sum(seconds for name, seconds in self.cpu.items() if name.startswith(role))


class Meter:
    """Reads the processes' CPU from /proc and, for the cluster, Redis's and
    PostgreSQL's own counters (INFO; transaction ids, WAL position and the
    backends' CPU)."""

    def __init__(self, pids: dict[str, int], redis_url: str | None = None, pg_url: str | None = None) -> None:
        self.pids = pids
        self._redis: Any = None
        self._pg: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url)
        if pg_url:
            import psycopg

            self._pg = psycopg.connect(pg_url.replace("+asyncpg", ""), autocommit=True)

    def sample(self) -> Sample:
        now = Sample(
            time.perf_counter(),
            {name: cpu_seconds(pid) for name, pid in self.pids.items()} | {"clients": cpu_seconds(os.getpid())},
            machine=machine_cpu_seconds(),
        )
        if self._redis is not None:
            info = self._redis.info()
            now.redis_commands = int(info["total_commands_processed"])
            now.redis_memory = int(info["used_memory"])
            now.redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        if self._pg is not None:
            # A transaction id is assigned to each transaction that writes
            # (and to this one): exact and immediate, where pg_stat_database
            # lags until the backends flush their statistics.
            now.pg_xact = int(self._pg.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])
            now.pg_wal = int(self._pg.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])
            now.pg_cpu = {}
            for (pid,) in self._pg.execute("SELECT pid FROM pg_stat_activity").fetchall():
                with contextlib.suppress(OSError):
                    now.pg_cpu[pid] = cpu_seconds(pid)
        return now

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._pg is not None:
            self._pg.close()

    @staticmethod
    def delta(before: Sample, after: Sample) -> Delta:
        return Delta(
            seconds=after.at - before.at,
            cpu={name: after.cpu[name] - before.cpu[name] for name in before.cpu},
            redis_commands=after.redis_commands - before.redis_commands,
            redis_memory=after.redis_memory - before.redis_memory,
            redis_cpu=after.redis_cpu - before.redis_cpu,
            # Less the one id each sample takes itself.
            pg_xact=after.pg_xact - before.pg_xact - 1,
            pg_wal=after.pg_wal - before.pg_wal,
            pg_cpu=math.nan
            if before.pg_cpu is None or after.pg_cpu is None
            else sum(after.pg_cpu[pid] - used for pid, used in before.pg_cpu.items() if pid in after.pg_cpu),
            machine=after.machine - before.machine,
        )

    async def measure_idle(self, seconds: float = IDLE_WINDOW) -> Delta:
        before = self.sample()
        await asyncio.sleep(seconds)
        return self.delta(before, self.sample())


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (/proc/stat: all
    but idle and I/O wait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- the two deployments ---------------------------------------------------------------------
def limits(sockets: int) -> dict[str, str]:
    """Every client comes from 127.0.0.1 and a few sockets call back to back:
    lift the per-address and per-session limits, which would measure the limiters."""
    return {
        "WAC_EDGE_RATE_PER_SECOND": "100000",
        "WAC_EDGE_RATE_BURST": "100000",
        "WAC_CORE_RATE_PER_SECOND": "1000000",
        "WAC_CORE_RATE_BURST": "1000000",
        "WAC_EDGE_MAX_CONNECTIONS_PER_ADDRESS": str(sockets + 200),
        "WAC_EDGE_AUTH_DEADLINE": "120",
        "WAC_ENVOY_UPGRADES_PER_ADDRESS": "0",
        "WAC_IDENTITY_LOGIN_QUEUE_PER_ADDRESS": "100000",
        "WAC_IDENTITY_MAX_LOGINS_PER_ADDRESS": "64",
        "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "10000",
        # Attempts under way count as failures until checked: thousands at
        # once from one address would throttle and lock it.
        "WAC_IDENTITY_THROTTLE_AFTER": "10000",
        "WAC_IDENTITY_LOCK_AFTER": "100000",
        "WAC_LOG_LEVEL": "warning",
        "WAC_GATEWAY_ENABLED": "false",
        "WAC_CONFERENCES_ENABLED": "false",
    }


@dataclass
class Deployment:
    """Where the clients connect, and the processes to meter."""

    name: str
    port: int
    pids: dict[str, int]
    meter: Meter
    # The sockets each edge holds now (Envoy's view); None without Envoy.
    admin_socket: Path | None = None
    edges: tuple[str, ...] = ()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wapi"

    def servers(self) -> list[int]:
        return [pid for name, pid in self.pids.items() if name.startswith(("core", "edge"))]

    def sockets_per_edge(self) -> list[int] | None:
        if self.admin_socket is None:
            return None
        counters = envoy.endpoint_stats(self.admin_socket)
        return [int(counters.get(("wac_edge", host, "rq_active"), "0")) for host in self.edges]


async def populate(url: str, pairs: int, watchers: int) -> None:
    """The callers, callees, subject and watchers, and the subject's contacts
    (its consent that the watchers see it), with a cheap argon2 hash."""
    from core.contacts.store import ContactRow, SqlContactsStore
    from core.db.engine import create_engine
    from core.db.work import dispose
    from core.identity.store import IdentityStore, SubscriberRow

    engine = create_engine(url)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    identity, contacts = IdentityStore(engine), SqlContactsStore(engine)
    now = time.time()
    names = [SUBJECT, *(f"{role}{i}" for i in range(pairs) for role in ("caller", "callee"))]
    names += [bench_wapi.watcher(i) for i in range(watchers)]
    gate = asyncio.Semaphore(8)

    async def subscriber(name: str) -> None:
        async with gate:
            await identity.create_subscriber(
                SubscriberRow(name, name.title(), (), "", ("user",), False, cheap, now, now)
            )

    async def contact(index: int) -> None:
        name = bench_wapi.watcher(index)
        async with gate:
            row = ContactRow(f"c{index}", SUBJECT, name.title(), name, (), (), name, False, "", now, now)
            await contacts.create(row, limit=max(watchers, 1))

    await asyncio.gather(*map(subscriber, names))
    await asyncio.gather(*map(contact, range(watchers)))
    await dispose(engine)


@contextlib.asynccontextmanager
async def embedded(work: Path, args: argparse.Namespace) -> AsyncIterator[Deployment]:
    """``wac core`` and ``wac edge`` on SQLite, the clients straight to the edge."""
    core_port, ws_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **limits(args.sockets),
        "WAC_DATA_DIR": str(work),
        "WAC_CORE_LISTEN": f"127.0.0.1:{core_port}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{ws_port}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core_port}",
    }
    for name in ("WAC_CONFIG", "WAC_CORE_DATABASE_URL", "WAC_CLUSTER_REDIS_URL"):
        env.pop(name, None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role, port in (("core", core_port), ("edge", ws_port)):
            processes[role] = spawn([sys.executable, "-m", "cli", role], env, stderr=subprocess.DEVNULL)
            await wait_port(port, 60)
        meter = Meter({role: process.pid for role, process in processes.items()})
        try:
            yield Deployment("embedded", ws_port, meter.pids, meter)
        finally:
            meter.close()
    finally:
        for process in reversed(processes.values()):
            stop(process)


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL and Redis of the bench's own: their URLs."""
    with throwaway.postgres() as pg_url, throwaway.redis() as redis_url:
        yield pg_url, redis_url


@contextlib.asynccontextmanager
async def cluster(work: Path, args: argparse.Namespace, pg_url: str, redis_url: str) -> AsyncIterator[Deployment]:
    """``wac cluster`` on the given servers, the clients through Envoy's front door."""
    front, core_base, edge_base = free_port(), throwaway.consecutive_free_ports(3), throwaway.consecutive_free_ports(4)
    env = {
        **os.environ,
        **limits(args.sockets),
        "WAC_DATA_DIR": str(work),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_CORE_LISTEN": f"127.0.0.1:{core_base}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{edge_base}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{edge_base + 1}",
        "WAC_CORE_DATABASE_URL": pg_url,
        "WAC_CLUSTER_REDIS_URL": redis_url,
    }
    for name in ("WAC_CONFIG", "WAC_ENVOY_ADMIN_PORT"):
        env.pop(name, None)
    log = work / "cluster.log"
    # Its own session: a stuck cluster is killed with all its children.
    process = spawn([sys.executable, "-m", "cli", "cluster"], env, log=log, start_new_session=True)
    cores = (f"127.0.0.1:{core_base}", f"127.0.0.1:{core_base + 1}")
    edges = (f"127.0.0.1:{edge_base}", f"127.0.0.1:{edge_base + 2}")
    admin_socket = work / "cluster" / "envoy" / "envoy-admin.sock"
    try:
        await healthy(process, admin_socket, cores, edges, log)
        started = dict(re.findall(r"wac: started (\S+) \(pid (\d+)\)", log.read_text(errors="replace")))
        pids = {name: int(pid) for name, pid in started.items()}
        meter = Meter(pids, redis_url, pg_url)
        try:
            yield Deployment("cluster", front, pids, meter, admin_socket, edges)
        finally:
            meter.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def healthy(
    process: subprocess.Popen[bytes], admin_socket: Path, cores: tuple[str, ...], edges: tuple[str, ...], log: Path
) -> None:
    """Until Envoy sees every core and edge healthy; then its workers' update
    merge window (up to a second) before any of them is chosen."""
    wanted = [("wac_core", host) for host in cores] + [("wac_edge", host) for host in edges]
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(OSError):
            counters = envoy.endpoint_stats(admin_socket)
            if all(counters.get((name, host, "health_flags")) == "healthy" for name, host in wanted):
                break
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"wac cluster did not become healthy:\n{tail(log)}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)


def spawn(argv: list[str], env: dict[str, str], *, log: Path | None = None, **options: Any) -> subprocess.Popen[bytes]:
    """A process of ``argv`` in the project's root, its output to ``log`` when given."""
    if log is None:
        return subprocess.Popen(argv, env=env, cwd=ROOT, **options)
    with log.open("wb") as sink:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, **options)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- 1. call set-ups ----------------------------------------------------------------------------
@dataclass
class CallRun:
    deployment: str
    pairs: int
    setups: int
    seconds: float
    latencies: list[float]
    errors: list[str]
    cost: Delta

    @property
    def rate(self) -> float:
        return self.setups / self.seconds if self.seconds else 0.0

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


async def call_setups(deployment: Deployment, args: argparse.Namespace) -> tuple[list[CallRun], float]:
    """The runs of every level, and the Redis bytes per call in progress (NaN: not measured)."""
    runs: list[CallRun] = []
    live_call_bytes = math.nan
    delay = args.answer_delay / 1000
    async with contextlib.AsyncExitStack() as stack:
        pairs = []
        try:
            for i in range(max(args.pairs)):
                caller = await stack.enter_async_context(bench_calls.device(deployment.ws_url, f"caller{i}"))
                callee = await stack.enter_async_context(bench_calls.device(deployment.ws_url, f"callee{i}"))
                pairs.append((caller, callee, f"callee{i}"))
        except Exception as exc:  # reported as the level's error
            progress(f"{deployment.name}: logging the call devices in failed: {exc!r}")
            failed = [f"login: {exc!r}"]
            return [
                CallRun(deployment.name, level, 0, 0.0, [], failed, empty_delta()) for level in args.pairs
            ], math.nan
        for level in args.pairs:
            if runs and runs[-1].setups == 0:
                runs.append(
                    CallRun(
                        deployment.name,
                        level,
                        0,
                        0.0,
                        [],
                        ["skipped: the previous level completed none"],
                        empty_delta(),
                    )
                )
                continue
            warm, _ = await bench_calls.phase(pairs[:level], min(2.0, args.seconds), delay, None)
            before = deployment.meter.sample()
            results, elapsed = await bench_calls.phase(pairs[:level], args.seconds, delay, None)
            cost = deployment.meter.delta(before, deployment.meter.sample())
            errors = [f"warm-up: {error}" for error in warm.errors] + results.errors
            runs.append(CallRun(deployment.name, level, results.setups, elapsed, results.latencies, errors, cost))
            progress(
                f"{deployment.name}: {level} pairs: {results.setups / elapsed:.0f} set-ups/s, {len(errors)} errors"
            )
        if runs and not runs[-1].errors:
            try:
                live_call_bytes = await bytes_per_live_call(pairs, deployment.meter)
            except Exception as exc:  # a figure of the sizing, not a target
                progress(f"{deployment.name}: holding calls failed: {exc!r}")
    return runs, live_call_bytes


async def bytes_per_live_call(pairs: list[tuple[bench_calls.Client, bench_calls.Client, str]], meter: Meter) -> float:
    """Redis memory per call in progress: every pair's call answered and held, then hung up."""
    offer, answer = {"type": "OFFER", "sdp": bench_calls.SDP}, {"type": "ANSWER", "sdp": bench_calls.SDP}
    before = meter.sample()
    held = []
    for caller, callee, callee_name in pairs:
        call = await caller.call("CallsService.CreateCall", {"callee": callee_name, "offer": offer})
        await callee.expect("callInvited")
        await callee.call("CallsService.AnswerCall", {"callId": call["callId"], "answer": answer})
        await caller.expect("callAnswered")
        held.append((caller, callee, call["callId"]))
    after = meter.sample()
    for caller, callee, call_id in held:
        await caller.call("CallsService.HangupCall", {"callId": call_id})
        await callee.expect("callEnded")
    grown = (after.redis_memory - before.redis_memory) / len(held)
    # Redis's allocator can hand memory back meanwhile: no growth is no figure.
    return grown if grown > 0 else math.nan


def empty_delta() -> Delta:
    return Delta(0.0, {}, *[math.nan] * 6)


# -- 2. fan-out ---------------------------------------------------------------------------------------
@dataclass
class Fanout:
    deployment: str
    ready: int
    per_edge: list[int] | None
    delays: list[float]
    delivered: list[int]
    rss_per_socket: dict[str, float]
    ramp: Delta
    idle: Delta
    baseline: Delta
    # Net of the idle traffic over their duration: every change to all
    # sockets, and one change that nobody watches (its fixed part).
    changes: Delta
    lone: Delta
    failures: list[str]

    @property
    def sessions(self) -> int:
        return max(self.ready, 1)

    def rss_kib(self, role: str) -> float:
        """RSS growth per socket, summed over the processes of a role."""
        return sum(kib for name, kib in self.rss_per_socket.items() if name.startswith(role))

    def idle_cpu(self, role: str) -> float:
        """CPU seconds per second per connected user, beyond the idle deployment's."""
        spent = self.idle.role_cpu(role) - self.baseline.role_cpu(role)
        return not_negative(spent / self.idle.seconds / self.sessions)

    @property
    def idle_redis(self) -> float:
        """Redis commands per second per connected user, beyond the idle deployment's."""
        spent = self.idle.redis_commands - self.baseline.redis_commands
        return not_negative(spent / self.idle.seconds / self.sessions)

    @property
    def deliveries_per_change(self) -> float:
        return max(sum(self.delivered) / max(len(self.delivered), 1), 1.0)

    def per_change(self, value: float) -> float:
        return value / max(len(self.delivered), 1)

    def per_delivery(self, per_change: float, fixed: float) -> float:
        """A change's cost beyond its fixed part (the lone change's), per socket reached."""
        return not_negative((per_change - fixed) / self.deliveries_per_change)


async def fanout(deployment: Deployment, args: argparse.Namespace) -> Fanout:
    meter, pids = deployment.meter, deployment.pids
    servers = deployment.servers()
    workers = bench_wapi.Workers()
    try:
        async with bench_wapi.logged_in(deployment.port, SUBJECT) as subject:
            await subject.call("EventsService.Subscribe", {})
            await bench_wapi.quiesce(servers, limit=15)
            baseline = await meter.measure_idle()
            rss_before = {name: rss_kib(pid) for name, pid in pids.items()}
            before = meter.sample()
            started = await workers.start(deployment.port, args.sockets, args.workers)
            ready, failures = started["ready"], list(started["failures"])
            if started["failed"]:
                failures.insert(0, f"{started['failed']} sockets never connected")
            if started["retries"]:
                failures.append(f"{started['retries']} log-ins or subscribes retried (DEADLINE_EXCEEDED, UNAVAILABLE)")
            progress(f"{deployment.name}: {ready} sockets connected and subscribed")
            for failure in failures:
                progress(f"{deployment.name}: connections {failure[:300]}")
            await bench_wapi.quiesce(servers, limit=60)
            progress(f"{deployment.name}: settled; idle window, then {args.changes} presence change(s)")
            ramp = meter.delta(before, meter.sample())
            rss_per_socket = {name: (rss_kib(pid) - rss_before[name]) / max(ready, 1) for name, pid in pids.items()}
            per_edge = deployment.sockets_per_edge()
            idle = await meter.measure_idle()
            sent: dict[str, float] = {}
            changes: Delta | None = None
            for change in range(args.changes):
                note = f"change-{change}"
                before = meter.sample()
                sent[note] = time.monotonic()
                await subject.call(
                    "PresenceService.SetPresence", {"status": "AWAY" if change % 2 == 0 else "AVAILABLE", "note": note}
                )
                for _ in range(120):  # 30 s at most
                    await asyncio.sleep(0.25)
                    if await workers.count(note) >= ready:
                        break
                spent = net(meter.delta(before, meter.sample()), idle)
                changes = spent if changes is None else combine(changes, spent)
                await bench_wapi.quiesce(servers, limit=10)
            lone = await lone_change(deployment, idle)
            arrivals: dict[str, list[float]] = {}
            for answer in await workers.ask("report"):
                for note, times in answer["arrivals"].items():
                    arrivals.setdefault(note, []).extend(times)
        delays = [at - sent[note] for note in sent for at in arrivals.get(note, [])]
        delivered = [len(arrivals.get(note, [])) for note in sent]
        return Fanout(
            deployment.name,
            ready,
            per_edge,
            delays,
            delivered,
            rss_per_socket,
            ramp,
            idle,
            baseline,
            changes or empty_delta(),
            lone,
            failures,
        )
    finally:
        await workers.stop()


async def lone_change(deployment: Deployment, idle: Delta, count: int = 5) -> Delta:
    """One presence change of a subscriber nobody watches (caller0), net of the
    idle traffic: the mean of ``count``, each past the coalescing window
    (250 ms by default), as one is lost in the idle cluster's noise."""
    async with bench_wapi.logged_in(deployment.port, "caller0") as lonely:
        await bench_wapi.quiesce(deployment.servers(), limit=10)
        before = deployment.meter.sample()
        for change in range(count):
            await lonely.call("PresenceService.SetPresence", {"status": ("AWAY", "AVAILABLE")[change % 2]})
            await asyncio.sleep(0.5)
        spent = net(deployment.meter.delta(before, deployment.meter.sample()), idle)
        return dataclasses.replace(combine(spent, spent, 1 / count - 1), seconds=spent.seconds / count)


def combine(a: Delta, b: Delta, weight: float = 1.0) -> Delta:
    """a + weight x b, field by field."""
    return Delta(
        a.seconds + weight * b.seconds,
        {name: a.cpu.get(name, 0.0) + weight * b.cpu.get(name, 0.0) for name in {*a.cpu, *b.cpu}},
        a.redis_commands + weight * b.redis_commands,
        a.redis_memory + weight * b.redis_memory,
        a.redis_cpu + weight * b.redis_cpu,
        a.pg_xact + weight * b.pg_xact,
        a.pg_wal + weight * b.pg_wal,
        a.pg_cpu + weight * b.pg_cpu,
        a.machine + weight * b.machine,
    )


def net(spent: Delta, idle: Delta) -> Delta:
    """What ``spent`` cost beyond the idle traffic (heartbeats, keep-alives) over as long."""
    return dataclasses.replace(combine(spent, idle, -spent.seconds / idle.seconds), seconds=spent.seconds)


# -- the report -----------------------------------------------------------------------------------------
def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def best(runs: list[CallRun], p99: float = math.inf) -> CallRun | None:
    """The run of the highest rate without errors whose p99 is under ``p99``."""
    fit = [run for run in runs if run.setups and not run.errors and run.p99 < p99]
    return max(fit, key=lambda run: run.rate, default=None)


def report_calls(runs: list[CallRun], args: argparse.Namespace) -> None:
    ms = 1e3
    rows = [
        [
            run.deployment,
            run.pairs,
            run.rate,
            percentile(run.latencies, 0.5) * ms,
            run.p99 * ms,
            max(run.latencies, default=math.nan) * ms,
            len(run.errors),
        ]
        for run in runs
    ]
    print()
    print(
        table(
            ["deployment", "pairs", "setups/s", "p50 ms", "p99 ms", "max ms", "errors"],
            rows,
            f"1. Call set-ups through WAPI, {args.seconds:g} s per level, answer delay {args.answer_delay:g} ms",
        )
    )
    for deployment in ("embedded", "cluster"):
        failed = [run for run in runs if run.deployment == deployment and run.errors]
        if failed:
            print(f"   {deployment}: first error at {failed[0].pairs} pairs: {failed[0].errors[0][:300]}")
    rows = []
    for run in runs:
        if not run.setups:
            continue
        per = 1e3 / run.setups  # ms per set-up
        cost = run.cost
        rows.append(
            [
                run.deployment,
                run.pairs,
                cost.role_cpu("core") * per,
                cost.role_cpu("edge") * per,
                cost.role_cpu("envoy") * per,
                cost.redis_cpu * per,
                cost.pg_cpu * per,
                cost.redis_commands / run.setups,
                cost.pg_xact / run.setups,
                cost.pg_wal / run.setups,
                cost.role_cpu("clients") * per,
                cost.machine * per,
                cost.busy() * 100,
            ]
        )
    print()
    print(
        table(
            [
                "deployment",
                "pairs",
                "core ms",
                "edge ms",
                "envoy ms",
                "redis ms",
                "pg ms",
                "redis cmds",
                "pg writes",
                "WAL bytes",
                "clients ms",
                "machine ms",
                "busy %",
            ],
            rows,
            "   Cost per set-up: CPU ms per process kind (summed over its processes), Redis commands, "
            "PostgreSQL write transactions and WAL bytes; the clients' CPU (this process) and the whole "
            "machine's, and the share of its CPUs in use",
        )
    )
    for run in runs:
        if run.setups and len(run.cost.cpu) > 2:
            each = ", ".join(
                f"{name} {seconds * 1e3 / run.setups:.2f}" for name, seconds in sorted(run.cost.cpu.items())
            )
            print(f"   {run.deployment}, {run.pairs} pairs, CPU ms per set-up by process: {each}")
    # Both at the latency bound: a saturated node's rate, queueing, is not a service level.
    embedded_best = best([run for run in runs if run.deployment == "embedded"], TARGET_SETUP_P99)
    cluster_best = best([run for run in runs if run.deployment == "cluster"], TARGET_SETUP_P99)
    if embedded_best and cluster_best:
        ratio = cluster_best.rate / embedded_best.rate
        print(
            f"   ratio: cluster {cluster_best.rate:.0f}/s ({cluster_best.pairs} pairs, p99 "
            f"{cluster_best.p99 * 1e3:.0f} ms) / embedded {embedded_best.rate:.0f}/s ({embedded_best.pairs} pairs) "
            f"= {ratio:.2f}x"
        )
    else:
        ratio = math.nan
        missing = " and ".join(
            name for name, run in (("embedded", embedded_best), ("cluster", cluster_best)) if not run
        )
        print(f"   ratio: - ({missing}: no level without errors at p99 < {TARGET_SETUP_P99 * 1e3:.0f} ms)")
    if embedded_best and embedded_best.cost.busy() > 0:
        # Whatever the deployment, this machine does at most its CPUs'
        # worth of set-ups: at the embedded node's CPU per set-up (clients
        # and all), that is this ceiling; the cluster's costs more.
        ceiling = 1 / embedded_best.cost.busy()
        print(
            f"   this machine's ceiling: the embedded node's best level kept {embedded_best.cost.busy():.0%} of "
            f"its {os.cpu_count()} CPUs busy; no deployment on it exceeds {ceiling:.2f}x that rate "
            "without spending less CPU per set-up than the embedded node does"
        )
    fastest = [best([run for run in runs if run.deployment == name]) for name in ("embedded", "cluster")]
    if fastest[0] and fastest[1]:
        print(
            f"   best rates whatever the p99: cluster {fastest[1].rate:.0f}/s / embedded {fastest[0].rate:.0f}/s "
            f"= {fastest[1].rate / fastest[0].rate:.2f}x"
        )
    print(
        f"   target: cluster >= {TARGET_RATIO:g}x embedded set-ups/s at p99 < {TARGET_SETUP_P99 * 1e3:.0f} ms: "
        f"{verdict(ratio >= TARGET_RATIO)}"
    )


def report_fanout(results: list[Fanout], args: argparse.Namespace) -> None:
    ms = 1e3
    rows = [
        [
            f.deployment,
            f.ready,
            "/".join(map(str, f.per_edge)) if f.per_edge else "-",
            min(f.delivered, default=0),
            percentile(f.delays, 0.5) * ms,
            percentile(f.delays, 0.99) * ms,
            max(f.delays, default=math.nan) * ms,
        ]
        for f in results
    ]
    print()
    print(
        table(
            ["deployment", "sockets", "per edge", "delivered", "p50 ms", "p99 ms", "max ms"],
            rows,
            f"2. One presence event to {args.sockets} sockets ({args.changes} change(s), one at a time)",
        )
    )
    for f in results:
        for failure in f.failures:
            print(f"   {f.deployment}: connections {failure[:300]}")
    rows = [
        [
            f.deployment,
            f.rss_kib("edge"),
            f.rss_kib("core"),
            f.ramp.role_cpu("core") / f.sessions * 1e3,
            f.ramp.role_cpu("edge") / f.sessions * 1e3,
            f.ramp.redis_memory / f.sessions,
            f.ramp.redis_commands / f.sessions,
            f.idle_cpu("core") * 1e6,
            f.idle_cpu("edge") * 1e6,
            f.idle_redis * 1e3,
        ]
        for f in results
    ]
    print()
    print(
        table(
            ["deployment", "edge KiB", "core KiB", "log-in core ms", "edge ms", "redis B", "redis cmds",
             "idle core us/s", "idle edge us/s", "idle redis cmds/ks"],
            rows,
            "   Cost per connected session: RSS growth (summed over edges, cores); CPU, Redis memory and commands "
            "of its log-in and subscription; idle CPU us per second and Redis commands per 1000 s",
        )
    )  # fmt: skip
    rows = []
    for f in results:
        row: list[object] = [f.deployment]
        for role in ("core", "edge"):
            fixed = not_negative(f.lone.role_cpu(role))
            row += [fixed * 1e3, f.per_delivery(f.per_change(f.changes.role_cpu(role)), fixed) * 1e6]
        fixed = not_negative(f.lone.redis_commands)
        row += [fixed, f.per_delivery(f.per_change(f.changes.redis_commands), fixed)]
        row += [f.per_change(f.changes.pg_xact), f.lone.pg_xact]
        rows.append(row)
    print()
    print(
        table(
            ["deployment", "core ms", "core us/delivery", "edge ms", "edge us/delivery", "redis cmds",
             "redis cmds/delivery", "pg writes", "pg writes alone"],
            rows,
            "   Cost per presence change, net of the idle traffic: its fixed part (a change nobody watches) "
            "and per socket reached; PostgreSQL write transactions per change",
        )
    )  # fmt: skip
    cluster_fanout = next((f for f in results if f.deployment == "cluster"), None)
    if cluster_fanout is not None:
        p99 = percentile(cluster_fanout.delays, 0.99)
        complete = min(cluster_fanout.delivered, default=0) == cluster_fanout.ready == args.sockets
        print(
            f"   target: cluster p99 < {TARGET_FANOUT_P99 * 1e3:.0f} ms to all {args.sockets} sockets: "
            f"{verdict(p99 < TARGET_FANOUT_P99 and complete)}"
            + ("" if complete else " (not every socket connected or received every change)")
        )


def not_negative(value: float) -> float:
    """0 for a (noise) negative difference; NaN stays NaN: not measured."""
    return 0.0 if value < 0 else value


def report_sizing(runs: list[CallRun], results: list[Fanout], live_call_bytes: float, args: argparse.Namespace) -> None:
    """The estimate of the module's docstring, from the measured costs."""
    source = best([run for run in runs if run.deployment == "cluster"]) or best(runs)
    fan = next((f for f in results if f.deployment == "cluster"), None) or next(iter(results), None)
    print()
    print(f"Sizing estimate: {args.users:,} connected users, {args.rate:g} call set-ups/s")
    if source is None or fan is None:
        print("   - (needs a set-up level without errors and a fan-out: see above)")
        return
    users, rate = args.users, args.rate
    changes_per_s = users * args.changes_per_hour / 3600
    deliveries_per_s = changes_per_s * args.watchers
    live_calls = rate * args.call_seconds

    def per_s(role: str) -> tuple[float, list[str]]:
        """CPU seconds per second of a role's processes, and the terms of the sum."""
        setup = source.cost.role_cpu(role) / source.setups
        fixed = not_negative(fan.lone.role_cpu(role))
        delivery = fan.per_delivery(fan.per_change(fan.changes.role_cpu(role)), fixed)
        total = rate * setup + users * fan.idle_cpu(role) + changes_per_s * fixed + deliveries_per_s * delivery
        terms = [
            f"{rate:g} x {setup * 1e3:.2f} ms/set-up",
            f"{users:,} x {fan.idle_cpu(role) * 1e6:.2f} us/s idle",
            f"{changes_per_s:,.0f} x {fixed * 1e3:.2f} ms/change",
            f"{deliveries_per_s:,.0f} x {delivery * 1e6:.1f} us/delivery",
        ]
        return total, terms

    core_cpu, core_terms = per_s("core")
    edge_cpu, edge_terms = per_s("edge")
    edge_memory_gib = users * fan.rss_kib("edge") / 2**20
    cores = math.ceil(core_cpu / args.utilisation)
    edges = max(math.ceil(edge_cpu / args.utilisation), math.ceil(edge_memory_gib / args.edge_memory_gib))
    redis_setup = source.cost.redis_commands / source.setups
    redis_fixed = not_negative(fan.lone.redis_commands)
    redis_delivery = fan.per_delivery(fan.per_change(fan.changes.redis_commands), redis_fixed)
    redis_ops = (
        rate * redis_setup + users * fan.idle_redis + changes_per_s * redis_fixed + deliveries_per_s * redis_delivery
    )
    session_bytes = fan.ramp.redis_memory / fan.sessions
    # Without a measured call in progress, a call is taken to hold what a session does.
    call_bytes = session_bytes if math.isnan(live_call_bytes) else live_call_bytes
    redis_memory = users * session_bytes + live_calls * call_bytes
    pg_setup, pg_change = source.cost.pg_xact / source.setups, fan.per_change(fan.changes.pg_xact)
    pg_writes = rate * pg_setup + changes_per_s * pg_change
    wal = rate * source.cost.pg_wal / source.setups + changes_per_s * fan.per_change(fan.changes.pg_wal)
    print(
        f"   from: set-up costs of the {source.deployment} run at {source.pairs} pairs; "
        f"session and presence costs of the {fan.deployment} run ({fan.ready} sockets)"
    )
    print(
        f"   assumed: {args.changes_per_hour:g} presence changes per user per hour ({changes_per_s:,.0f}/s), "
        f"{args.watchers} watchers each ({deliveries_per_s:,.0f} deliveries/s); a process at {args.utilisation:.0%} "
        f"of one CPU; {args.edge_memory_gib:g} GiB per edge; calls of {args.call_seconds:g} s ({live_calls:,.0f} "
        "in progress); this machine's CPUs"
    )
    rows = [
        ["core processes", cores, f"{core_cpu:.2f} CPU = " + " + ".join(core_terms)],
        ["edge processes", edges, f"{edge_cpu:.2f} CPU = " + " + ".join(edge_terms)
         + f"; {edge_memory_gib:.1f} GiB at {fan.rss_kib('edge'):.0f} KiB/socket"],
        ["Redis ops/s", redis_ops, f"{rate:g} x {redis_setup:.1f}/set-up + {users:,} x {fan.idle_redis:.3f}/s idle + "
         f"{changes_per_s:,.0f} x {redis_fixed:.0f}/change + {deliveries_per_s:,.0f} x {redis_delivery:.2f}/delivery"],
        ["Redis memory MiB", redis_memory / 2**20, f"{users:,} sessions x {session_bytes:.0f} B + {live_calls:,.0f} "
         f"calls x {call_bytes:.0f} B" + (" (a session's: not measured)" if math.isnan(live_call_bytes) else "")],
        ["PostgreSQL writes/s", pg_writes, f"{rate:g} x {pg_setup:.1f}/set-up + {changes_per_s:,.0f} x "
         f"{pg_change:.1f}/change (write transactions); WAL {wal / 2**20:.1f} MiB/s"],
    ]  # fmt: skip
    print(table(["what", "estimate", "how"], rows))


async def run(args: argparse.Namespace) -> int:
    raise_open_files(args.sockets + 4096)
    runs: list[CallRun] = []
    results: list[Fanout] = []
    live_call_bytes = math.nan
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, servers() as (pg_url, redis_url):
        from settings.config import load_config

        works = {name: Path(tmp) / name for name in ("embedded", "cluster")}
        for work in works.values():
            # The core refuses a data dir other users can read (it holds the keys).
            work.mkdir(mode=0o700)
        progress(f"populating both databases: {args.sockets} watchers, {max(args.pairs)} pairs ...")
        sqlite_url = load_config(None, {"WAC_DATA_DIR": str(works["embedded"])}).database_url
        from core.db.migrate import upgrade

        for url in (sqlite_url, pg_url):
            # One after the other: alembic's context is global to the process.
            await asyncio.to_thread(upgrade, url)
        # Both at once, before anything is measured.
        await asyncio.gather(*(populate(url, max(args.pairs), args.sockets) for url in (sqlite_url, pg_url)))
        for name, work in works.items():
            started = time.perf_counter()
            progress(f"{name}: starting ...")
            deploy = embedded(work, args) if name == "embedded" else cluster(work, args, pg_url, redis_url)
            try:
                async with deploy as deployment:
                    progress(f"{name}: up in {time.perf_counter() - started:.0f} s: {deployment.pids}")
                    if args.only in (None, "calls"):
                        level_runs, held = await call_setups(deployment, args)
                        runs += level_runs
                        if name == "cluster":
                            live_call_bytes = held
                    if args.only in (None, "fanout"):
                        try:
                            results.append(await fanout(deployment, args))
                        except Exception as exc:  # a measurement: the report still comes
                            progress(f"{name}: fan-out failed: {exc!r}")
            except Exception as exc:  # the other deployment's figures are still reported
                progress(f"{name}: failed: {exc}")
            gc.collect()
    print()
    print(
        f"wac: embedded (1 core, 1 edge, SQLite) and cluster (2 cores, 2 edges, Envoy, PostgreSQL, Redis) "
        f"on {os.cpu_count()} CPUs, clients on the same machine"
    )
    if runs:
        report_calls(runs, args)
    if results:
        report_fanout(results, args)
    report_sizing(runs, results, live_call_bytes, args)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pairs",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[8, 16],
        help="caller/callee pairs per load level, comma-separated (default 8,16)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load level (default 10)")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="scripted ms before answering")
    parser.add_argument("--sockets", type=int, default=5000, help="watchers of the fan-out (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="client processes holding them (default 2)")
    parser.add_argument("--changes", type=int, default=1, help="presence changes, one at a time (default 1)")
    parser.add_argument("--only", choices=["calls", "fanout"])
    sizing = parser.add_argument_group("sizing assumptions")
    sizing.add_argument("--users", type=int, default=100_000)
    sizing.add_argument("--rate", type=float, default=500.0, help="call set-ups per second")
    sizing.add_argument("--changes-per-hour", type=float, default=6.0, help="presence changes per user")
    sizing.add_argument("--watchers", type=int, default=20, help="sockets watching each user")
    sizing.add_argument("--utilisation", type=float, default=0.6, help="of one CPU, per process")
    sizing.add_argument("--edge-memory-gib", type=float, default=4.0, help="memory per edge process")
    sizing.add_argument("--call-seconds", type=float, default=180.0, help="mean length of a call")
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
