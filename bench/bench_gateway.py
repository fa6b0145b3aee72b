"""The SIP gateway under sipp: each call REGISTERs a subscriber with their
bearer token (RFC 8898), then INVITEs a number, ACK, BYE, through Kamailio
with rtpengine anchoring the media and a sipp UAS as the trunk. The same
load runs, in the same run, through two Kamailios rendered from the same
template with the same values: one with the IdM callouts (identity:verify
on REGISTER and INVITE, identity:authorize call.pstn on INVITE, each a
request to the SAPI through Envoy to the core), and the baseline started
with ``-A WAC_BENCH_NO_IDM``, where the script checks the token's shape and
asks nobody (gateway/kamailio.cfg.tmpl; ``wac gateway`` never sets it).

Reported: calls/s achieved at --rate offered (target: 0 failures); REGISTER
p50 with and without the callouts, whose difference is what one verify adds
(target <= 2 ms); INVITE to 200 with and without, what verify + authorize
add to a call set-up; both at --rate and at a light 50/s (no queue in
front of the callouts); then a short ramp per mode (--ramp rates, each for
--ramp-seconds, stopping at the first failure): the highest offered rate
with no failure. Response times come from sipp's message timestamps
(-trace_shortmsg, microseconds), CPU per call of each process from /proc.

The core (``wac core``), Envoy, rtpengine, both Kamailios and the sipp
processes are separate processes on free 127.0.0.1 ports. Subscribers are
written through the identity store with a cheap argon2 hash (login cost is
identity's benchmark, not this one), hold the role pstn (call.pstn), and
log in once over gRPC before the loads; their tokens reach sipp in an
injection file (-inf), not on its command line. The core's per-caller and
login limits are lifted, as in the other benchmarks.

    .venv/bin/python bench/bench_gateway.py [--rate 200] [--seconds 5]
        [--subscribers 200] [--ramp 300,400,500,600,800] [--ramp-seconds 3]
        [--transport udp|tcp] [--keep DIR]

--keep DIR keeps every process's log and sipp's traces and statistics
(and the subscribers' tokens) in DIR, which must not exist yet.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from argon2 import PasswordHasher
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import free_port, percentile, raise_open_files, table, wait_port  # noqa: E402

from cli import envoy, gateway  # noqa: E402
from core.db.engine import create_engine  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.identity.store import IdentityStore, SubscriberRow  # noqa: E402
from settings.config import load_config  # noqa: E402
from settings.gatewaykey import read_gateway_key  # noqa: E402
from tests.support.gateway import rtpengine_answers, sip_options_answered, udp_port_taken  # noqa: E402
from wac.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402

PASSWORD = "benchmark1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# The callouts-off switch of gateway/kamailio.cfg.tmpl (Kamailio's -A).
NO_IDM = "WAC_BENCH_NO_IDM"
TARGET_VERIFY_MS = 2.0
LIGHT_RATE = 50
KAMAILIO_WORKERS = 4
KAMAILIO_SHM_MB = 256
# A sipp call that waits longer than this for an answer has failed.
RECV_TIMEOUT_MS = 3000


# -- processes ----------------------------------------------------------------------
def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of pid and its children (Kamailio's workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_for(what: str, ready: object, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not come up (exit {process.poll()}):\n{tail}")
        time.sleep(0.05)


@dataclass
class Processes:
    """Every child of the benchmark, stopped in reverse order."""

    stack: ExitStack = field(default_factory=ExitStack)

    def start(
        self, command: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        sink = self.stack.enter_context(log.open("wb"))
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
        self.stack.callback(stop, process)
        return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- subscribers and their tokens ----------------------------------------------------
async def populate(url: str, count: int) -> list[str]:
    engine = create_engine(url)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    store = IdentityStore(engine)
    now = time.time()
    names = [f"sub{i}" for i in range(count)]
    for name in names:
        row = SubscriberRow(name, name.title(), (), "", ("user", "pstn"), False, cheap, now, now)
        await store.create_subscriber(row)
    await engine.dispose()
    return names


async def login_all(core_port: int, names: list[str]) -> list[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core_port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        limit = asyncio.Semaphore(8)

        async def login(name: str) -> str:
            async with limit:
                request = identity_pb2.LoginRequest(username=name, password=PASSWORD, device_name="bench")
                return str((await identity.Login(request)).access_token)

        return list(await asyncio.gather(*(login(name) for name in names)))


def write_injection(path: Path, names: list[str], tokens: list[str]) -> None:
    """sipp's -inf: one line per call (reused in turn), username;token;number.
    0600: it holds live tokens."""
    path.touch(mode=0o600)
    lines = ["SEQUENTIAL"]
    lines += [f"{name};{token};+3491{i:07d}" for i, (name, token) in enumerate(zip(names, tokens, strict=True))]
    path.write_text("\n".join(lines) + "\n")


# -- one load -------------------------------------------------------------------------
@dataclass
class Gateway:
    name: str
    sip_port: int
    pid: int


@dataclass
class Load:
    mode: str
    rate: int
    calls: int
    successful: int = 0
    failed: int = 0
    elapsed: float = 0.0
    register: list[float] = field(default_factory=list)
    invite: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    # Requests sipp sent again (UDP, no answer within 500 ms), and answers it
    # gave up waiting for (-recv_timeout), by message.
    retransmissions: int = 0
    timeouts: dict[str, int] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.successful / self.elapsed if self.elapsed else 0.0

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.successful == self.calls


def run_sipp(target: Gateway, rate: int, seconds: float, injection: Path, workdir: Path, transport: str) -> Load:
    """sipp as the subscribers: rate calls/s for seconds against target, to completion."""
    calls = max(1, round(rate * seconds))
    workdir.mkdir(parents=True)
    command = [
        "sipp", f"127.0.0.1:{target.sip_port}", "-sf", str(SCENARIOS / "register_call.xml"),
        "-inf", str(injection), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
        # UDP: one socket for every call; TCP: a connection per call (as
        # browsers have one WebSocket each), spread over Kamailio's workers.
        "-t", "u1" if transport == "udp" else "tn", "-max_socket", "10000",
        "-r", str(rate), "-m", str(calls), "-nostdin",
        "-recv_timeout", str(RECV_TIMEOUT_MS), "-timeout", f"{seconds + 30:.0f}s",
        "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_shortmsg", "-shortmessage_file", str(workdir / "messages.tsv"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]  # fmt: skip
    log = workdir / "sipp.log"
    with log.open("wb") as sink:
        subprocess.run(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, timeout=seconds + 60, check=False)
    load = Load(target.name, rate, calls)
    if not (workdir / "stat.csv").exists():
        raise RuntimeError(f"sipp did not run: {log.read_text(errors='replace')[-1500:]}")
    stats = read_stats(workdir / "stat.csv")
    load.successful = int(stats["SuccessfulCall(C)"])
    load.failed = int(stats["FailedCall(C)"])
    load.elapsed = sipp_seconds(stats["ElapsedTime(C)"])
    load.register, load.invite = response_times(workdir / "messages.tsv")
    load.retransmissions, load.timeouts = read_screen(log)
    return load


def response_times(path: Path) -> tuple[list[float], list[float]]:
    """REGISTER to its 200 and INVITE to its 200, in ms, per call, from sipp's
    short message trace (-trace_shortmsg: date, time, epoch seconds with
    microseconds, S or R, Call-ID, CSeq, first line). From the first send,
    so a retransmitted request counts its wait."""
    sent: dict[tuple[str, str], float] = {}
    times: dict[str, list[float]] = {"REGISTER": [], "INVITE": []}
    with path.open(newline="") as file:
        for row in csv.reader(file, delimiter="\t"):
            if len(row) < 7:
                continue
            method = row[5].rsplit(" ", 1)[-1]
            if method not in times:
                continue
            key = (row[4], method)
            if row[3] == "S":
                sent.setdefault(key, float(row[2]))
            elif row[6].startswith("SIP/2.0 200") and key in sent:
                times[method].append((float(row[2]) - sent.pop(key)) * 1e3)
    return times["REGISTER"], times["INVITE"]


SCREEN_LINE = re.compile(r"^\s+(\S+) (-+>|<-+)\s+(?:[BE]-RTD\d\s+)?(\d+)\s+(\d+)\s+(\d+)")


def read_screen(log: Path) -> tuple[int, dict[str, int]]:
    """From sipp's last screen: retransmitted requests in all, and timeouts
    by awaited answer ("200 to REGISTER")."""
    text = log.read_text(errors="replace")
    last = text.rsplit("Messages  Retrans", 1)[-1].split("Test Terminated", 1)[0]
    retransmissions, timeouts, request = 0, {}, ""
    for line in last.splitlines():
        match = SCREEN_LINE.match(line)
        if match is None:
            continue
        name, arrow, _, retrans, timeout = match.groups()
        if arrow.endswith(">"):
            request = name
            retransmissions += int(retrans)
        elif int(timeout):
            timeouts[f"{name} to {request}"] = int(timeout)
    return retransmissions, timeouts


def read_stats(path: Path) -> dict[str, str]:
    """The last line of sipp's -trace_stat file, by column name."""
    with path.open(newline="") as file:
        rows = [row for row in csv.reader(file, delimiter=";") if row]
    if len(rows) < 2:
        raise RuntimeError(f"sipp wrote no statistics in {path}")
    return dict(zip(rows[0], rows[-1], strict=False))


def sipp_seconds(text: str) -> float:
    """sipp's HH:MM:SS:mmmuuu (or HH:MM:SS) in seconds."""
    parts = text.strip().split(":")
    hours, minutes, secs = (int(p) for p in parts[:3])
    fraction = int(parts[3]) / 10 ** len(parts[3]) if len(parts) > 3 and parts[3] else 0.0
    return hours * 3600 + minutes * 60 + secs + fraction


def measure(
    target: Gateway, rate: int, seconds: float, injection: Path, workdir: Path, others: dict[str, int], transport: str
) -> Load:
    watched = {"Kamailio": target.pid, **others}
    before = {name: process_tree_cpu(pid) for name, pid in watched.items()}
    load = run_sipp(target, rate, seconds, injection, workdir, transport)
    load.cpu = {name: process_tree_cpu(pid) - before[name] for name, pid in watched.items()}
    return load


# -- the orchestrator ------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="calls/s offered in the main load")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the main load")
    parser.add_argument("--subscribers", type=int, default=200, help="subscribers (one token each)")
    parser.add_argument("--ramp", default="300,400,500,600,800", help="offered rates of the ramp, comma-separated")
    parser.add_argument("--ramp-seconds", type=float, default=3.0, help="length of each step of the ramp")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="the subscribers' side")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="the core does not read the gateway's call reports (what recording costs)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and sipp's traces in this new directory")
    args = parser.parse_args()
    ramp = [int(rate) for rate in args.ramp.split(",") if rate.strip()]
    missing = gateway.missing_programs() + ([] if shutil.which("sipp") else ["sipp"])
    if missing:
        print(f"needs kamailio, rtpengine and sipp (deps/debian.txt); missing: {', '.join(missing)}")
        return 1
    raise_open_files(65536)
    started = time.monotonic()
    processes = Processes()
    with ExitStack() as scope:
        if args.keep:
            args.keep.mkdir(mode=0o700, parents=True)
            work = args.keep.resolve()
        else:
            work = Path(scope.enter_context(tempfile.TemporaryDirectory()))
        scope.enter_context(processes.stack)
        core_port, front_port, admin_port = free_port(), free_port(), free_port()
        # The gateway with the callouts reports its calls to the core, which
        # records them (history, presence) as in production.
        events_port, rpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WAC_DATA_DIR": str(work / "data"),
            "WAC_CORE_LISTEN": f"127.0.0.1:{core_port}",
            "WAC_LOG_LEVEL": "warning",
            # Every subscriber logs in at once from 127.0.0.1: let them queue,
            # and do not pace one address's calls.
            "WAC_CORE_RATE_PER_SECOND": "1000000",
            "WAC_CORE_RATE_BURST": "1000000",
            "WAC_CORE_API_KEY_RATE_PER_SECOND": "0",
            "WAC_IDENTITY_LOGIN_QUEUE_PER_ADDRESS": "100000",
            "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "10000",
            "WAC_GATEWAY_EVENTS_LISTEN": f"127.0.0.1:{events_port}",
            "WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{rpc_port}",
        }
        (work / "data").mkdir(mode=0o700)
        config = load_config(None, env)
        upgrade(config.database_url)
        names = asyncio.run(populate(config.database_url, args.subscribers))

        core = processes.start([sys.executable, "-m", "cli", "core"], work / "core.log", env=env, cwd=ROOT)
        envoy_config = work / "envoy.yaml"
        # Only the SAPI is used: the edge and the WebSocket side are not running.
        envoy_config.write_text(
            envoy.render_config(
                listen_port=front_port,
                core_address=f"127.0.0.1:{core_port}",
                edge_address=f"127.0.0.1:{free_port()}",
                edge_http_address=f"127.0.0.1:{free_port()}",
                gateway_ws_address=f"127.0.0.1:{free_port()}",
                admin_port=admin_port,
            )
        )
        front = processes.start(envoy.envoy_command(envoy_config, log_level="error"), work / "envoy.log", cwd=ROOT)
        asyncio.run(wait_port(core_port))
        envoy.wait_until_live(front, admin_port)
        key = read_gateway_key(config, 20)
        tokens = asyncio.run(login_all(core_port, names))
        injection = work / "subscribers.csv"
        write_injection(injection, names, tokens)

        control_port = free_port()
        # Its own range, away from the tests' 20000-29999.
        rtp_min = 10000 + random.randrange(0, 4) * 2000
        rtpengine = processes.start(
            gateway.rtpengine_command(
                control=f"udp:127.0.0.1:{control_port}",
                media_address="127.0.0.1",
                port_min=rtp_min,
                port_max=rtp_min + 1999,
                pid_file=work / "rtpengine.pid",
            ),
            work / "rtpengine.log",
        )
        wait_for("rtpengine", lambda: rtpengine_answers(control_port), rtpengine, work / "rtpengine.log")

        trunk_port = free_port()
        trunk_command = ["sipp", "-nostdin", "-sf", str(SCENARIOS / "trunk.xml"), "-i", "127.0.0.1"]
        trunk_command += ["-p", str(trunk_port), "-t", "u1", "-mp", str(free_port())]
        trunk_log = work / "trunk.log"
        trunk = processes.start(trunk_command, trunk_log, cwd=work)
        wait_for("the sipp trunk", lambda: udp_port_taken(trunk_port), trunk, trunk_log)

        gateways = {}
        for mode, defines in (("IdM callouts", []), ("no callouts", ["-A", NO_IDM])):
            directory = work / ("kamailio-idm" if not defines else "kamailio-baseline")
            directory.mkdir()
            sip_port = free_port()
            config_path = directory / "kamailio.cfg"
            gateway.write_private(
                config_path,
                gateway.render_config(
                    ws_listen=f"127.0.0.1:{free_port()}",
                    sip_listen=f"127.0.0.1:{sip_port}",
                    jsonrpc_listen=f"127.0.0.1:{free_port() if defines else rpc_port}",
                    events_listen=f"127.0.0.1:{free_port() if defines or args.no_history else events_port}",
                    trunk_uri=f"sip:127.0.0.1:{trunk_port}",
                    rtpengine=f"udp:127.0.0.1:{control_port}",
                    sapi_url=f"http://127.0.0.1:{front_port}",
                    gateway_key=key,
                    workers=KAMAILIO_WORKERS,
                ),
            )
            (directory / "run").mkdir()
            command = gateway.kamailio_command(
                config_path, shm_mb=KAMAILIO_SHM_MB, pid_file=directory / "kamailio.pid", runtime_dir=directory / "run"
            )
            log = directory / "kamailio.log"
            process = processes.start(command + defines, log)
            wait_for(f"Kamailio ({mode})", lambda port=sip_port: sip_options_answered(port), process, log)
            gateways[mode] = Gateway(mode, sip_port, process.pid)

        others = {"core": core.pid, "Envoy": front.pid, "rtpengine": rtpengine.pid}
        runs = work / "runs"
        # Warm-up: connections, caches, every subscriber registered once.
        warm = {
            name: measure(target, 50, 1.0, injection, runs / f"warm-{name}", others, args.transport)
            for name, target in gateways.items()
        }
        # Light: what a callout adds with no queue in front of it.
        light_loads = {
            name: measure(target, LIGHT_RATE, 2.0, injection, runs / f"light-{name}", others, args.transport)
            for name, target in gateways.items()
        }
        main_loads = {
            name: measure(target, args.rate, args.seconds, injection, runs / f"main-{name}", others, args.transport)
            for name, target in gateways.items()
        }
        ramps: dict[str, list[Load]] = {name: [] for name in gateways}
        for name, target in gateways.items():
            for rate in ramp:
                load = measure(
                    target, rate, args.ramp_seconds, injection, runs / f"ramp-{name}-{rate}", others, args.transport
                )
                ramps[name].append(load)
                if not load.clean:
                    break

        # Every call through the gateway with the callouts is in the history.
        placed = sum(
            load.calls
            for load in (
                warm["IdM callouts"],
                light_loads["IdM callouts"],
                main_loads["IdM callouts"],
                *ramps["IdM callouts"],
            )
        )
        recorded = asyncio.run(recorded_calls(config.database_url, placed))

    report(args, light_loads, main_loads, ramps, time.monotonic() - started)
    print(f"calls in wac's history from the gateway's reports: {recorded[0]} ({recorded[1]} ended) of {placed} placed")
    return 0 if all(load.clean for load in main_loads.values()) else 1


async def recorded_calls(url: str, placed: int) -> tuple[int, int]:
    """(recorded, ended) calls through the gateway in the history, once the
    core has caught up with the reports (or after 10 s)."""
    engine = create_engine(url)
    query = text(
        "SELECT count(*), coalesce(sum(CASE WHEN state = 'ENDED' THEN 1 ELSE 0 END), 0) FROM calls WHERE via = 'SIP'"
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            async with engine.connect() as conn:
                row = (await conn.execute(query)).one()
            if row[1] >= placed or time.monotonic() > deadline:
                return int(row[0]), int(row[1])
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def report(
    args: argparse.Namespace,
    light_loads: dict[str, Load],
    main_loads: dict[str, Load],
    ramps: dict[str, list[Load]],
    took: float,
) -> None:
    print(
        "REGISTER + INVITE to a number + ACK + BYE per call, "
        f"sipp over {args.transport.upper()}; {args.subscribers} subscribers; "
        f"Kamailio {KAMAILIO_WORKERS} workers, {KAMAILIO_SHM_MB} MB; {os.cpu_count()} CPUs; "
        f"core, Envoy, rtpengine, Kamailio, sipp in separate processes; whole run {took:.0f} s"
    )
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    rows = []
    loads = [("light", load) for load in light_loads.values()]
    loads += [("main", load) for load in main_loads.values()]
    loads += [("ramp", step) for steps in ramps.values() for step in steps]
    for kind, load in loads:
        per_call = 1e3 / max(load.successful, 1)
        rows.append(
            (
                kind,
                load.mode,
                load.rate,
                load.calls,
                load.calls - load.successful,
                load.retransmissions,
                load.achieved,
                percentile(load.register, 0.50),
                percentile(load.register, 0.99),
                percentile(load.invite, 0.50),
                percentile(load.invite, 0.99),
                load.cpu["Kamailio"] * per_call,
                load.cpu["core"] * per_call,
                load.cpu["Envoy"] * per_call,
            )
        )
    headers = (
        "load", "gateway", "offered/s", "calls", "failed", "retrans", "calls/s", "REG p50 ms", "REG p99 ms",
        "INV p50 ms", "INV p99 ms", "Kam CPU ms/call", "core CPU ms/call", "Envoy CPU ms/call",
    )  # fmt: skip
    print(table(headers, rows))
    for _, load in loads:
        if load.timeouts:
            waited = ", ".join(f"{answer} {count}" for answer, count in load.timeouts.items())
            print(f"{load.mode} at {load.rate}/s: sipp gave up waiting for {waited}")
    idm, base = main_loads["IdM callouts"], main_loads["no callouts"]
    print()
    verdict = "met" if idm.clean else "MISSED"
    print(
        f"at {args.rate}/s offered: {idm.achieved:.1f} calls/s with the callouts, {idm.calls - idm.successful} failed "
        f"(target 0: {verdict}); {base.achieved:.1f} calls/s without"
    )
    for title, pair in (
        (f"at {args.rate}/s", main_loads),
        (f"at {LIGHT_RATE}/s", light_loads),
    ):
        with_idm, without = pair["IdM callouts"], pair["no callouts"]
        setup = percentile(with_idm.invite, 0.5) - percentile(without.invite, 0.5)
        if with_idm.register and without.register:
            verify = percentile(with_idm.register, 0.5) - percentile(without.register, 0.5)
            verdict = "met" if verify <= TARGET_VERIFY_MS else "MISSED"
            added = f"{verify:.2f} ms (target <= {TARGET_VERIFY_MS} ms: {verdict})"
        else:
            # sipp's short trace over TCP (-t tn) leaves out each call's first message.
            added = "not measured (over TCP sipp does not trace a call's first message: use UDP)"
        print(
            f"{title}: added per verify (REGISTER p50, with - without) {added}; "
            f"per call set-up (INVITE to 200 p50, verify + authorize) {setup:.2f} ms"
        )
    for name, steps in ramps.items():
        passed = [step for step in steps if step.clean]
        if main_loads[name].clean:
            passed.append(main_loads[name])
        best = max(passed, key=lambda load: load.rate, default=None)
        beyond = "" if len(steps) > len([s for s in steps if s.clean]) else " (every step of the ramp passed)"
        if best is None:
            print(f"highest offered rate with no failure, {name}: none")
        else:
            print(
                f"highest offered rate with no failure, {name}: {best.rate}/s "
                f"({best.achieved:.0f} calls/s achieved there){beyond}"
            )


if __name__ == "__main__":
    sys.exit(main())
