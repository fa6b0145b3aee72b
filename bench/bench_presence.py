"""Presence fan-out and directory search over real gRPC, the core in its own
process (``wac core``).

1. Fan-out: one subscriber's contacts link --watchers subscribers (its
   consent that they see it), each with an event stream open (in --workers client
   processes). The subject changes status --changes times, each change after
   the coalescing interval, and every watcher stamps the event's arrival.
   Reported: the delay from SetPresence to arrival at each watcher, and until
   the last watcher of a change has it (p50, p99). Target: p99 < 500 ms.
2. Sustained changes: the subject publishes as fast as --concurrency callers
   can for --seconds with the watchers connected. Reported: SetPresence per
   second with its latency, the events each watcher received per second
   (coalesced), and whether every watcher then converges on a final change.
3. Search: --entries directory entries; SearchDirectory by name, surname,
   e-mail and phone prefixes (national and E.164), beside a gRPC health check
   on the same core as the baseline. Target: SearchDirectory p99 < 20 ms.

Setup writes the database directly through the stores (subscribers with a
cheap argon2 hash: login cost is identity's benchmark, not this one).

    .venv/bin/python bench/bench_presence.py [--watchers 1000] [--workers 2]
        [--changes 40] [--seconds 10] [--concurrency 8] [--entries 100000]
        [--searches 1000] [--only fanout|search]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import grpc
from argon2 import PasswordHasher
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import free_port  # noqa: E402

from core.contacts.store import ContactRow, SqlContactsStore  # noqa: E402
from core.db.engine import create_engine  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402
from core.directory.records import DirectoryRecord  # noqa: E402
from core.directory.store import DirectoryStore  # noqa: E402
from core.identity.store import IdentityStore, SubscriberRow  # noqa: E402
from settings.config import load_config  # noqa: E402
from wac.v1 import (  # noqa: E402
    directory_pb2,
    directory_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
)

PASSWORD = "benchmark1"
SUBJECT = "subject"
TARGET_FANOUT_P99_MS = 500.0
TARGET_SEARCH_P99_MS = 20.0
STREAMS_PER_CHANNEL = 100
Status = presence_pb2.Presence.Status

GIVEN = [
    "Ana",
    "Bruno",
    "Carla",
    "David",
    "Elena",
    "Fiona",
    "Gabriel",
    "Hugo",
    "Irene",
    "Jorge",
    "Lucía",
    "Marta",
    "Nicolás",
    "Olga",
    "Pablo",
    "Rosa",
]
FAMILY = [
    "García",
    "Díaz",
    "Ruiz",
    "Moreno",
    "Sanz",
    "Smith",
    "León",
    "Navarro",
    "Vidal",
    "Castro",
    "Ortega",
    "Delgado",
    "Marín",
    "Iglesias",
    "Romero",
]


def watcher_name(index: int) -> str:
    return f"w{index:05d}"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# --- Setup, straight into the database. ------------------------------------------


def ascii_lower(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def person(index: int) -> DirectoryRecord:
    rng = random.Random(index)
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    return DirectoryRecord(
        entry_id=f"p{index}",
        display_name=f"{given} {family} {index}",
        phone_numbers=(f"+346{index:08d}",),
        emails=(f"{ascii_lower(given)}.{ascii_lower(family)}{index}@example.com",),
        department=rng.choice(["Sales", "Support", "Engineering", "Finance"]),
    )


async def populate(url: str, watchers: int, entries: int) -> float:
    """Subscribers, the subject's contacts of the watchers, directory entries.
    Returns the seconds the directory took to fill."""
    engine = create_engine(url)
    cheap_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    identity, contacts = IdentityStore(engine), SqlContactsStore(engine)
    now = time.time()
    for username in [SUBJECT, *map(watcher_name, range(watchers)), "searcher"]:
        await identity.create_subscriber(
            SubscriberRow(username, username.title(), (), "", ("user",), False, cheap_hash, now, now)
        )
    for index in range(watchers):
        name = watcher_name(index)
        await contacts.create(
            ContactRow(f"c{index}", SUBJECT, name.title(), name, (), (), name, False, "", now, now),
            limit=watchers,
        )
    started = time.perf_counter()
    directory = DirectoryStore(engine)
    batch = 10_000
    for start in range(0, entries, batch):
        await directory.apply_changes("ldap:bench", [person(i) for i in range(start, min(entries, start + batch))], [])
    filled = time.perf_counter() - started
    if url.startswith("sqlite"):
        # Fold the fill's write-ahead log into the database now, or the
        # first commit in the core would pay for it during the measurement.
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await engine.dispose()
    return filled


# --- Watchers (run as --watch worker processes). --------------------------------


async def watch(port: int, first: int, count: int) -> None:
    """Log in ``count`` watchers, open their streams, print READY once each has
    seen its own presence (so it is online), stamp the subject's events, and
    print them as JSON when stdin says stop."""
    target = f"127.0.0.1:{port}"
    channels = [grpc.aio.insecure_channel(target) for _ in range(0, count, STREAMS_PER_CHANNEL)]
    received: dict[str, list[tuple[str, float]]] = {}
    online = 0
    all_online = asyncio.Event()

    async def one(index: int) -> None:
        nonlocal online
        channel = channels[(index - first) // STREAMS_PER_CHANNEL]
        username = watcher_name(index)
        session = await identity_pb2_grpc.IdentityServiceStub(channel).Login(
            identity_pb2.LoginRequest(username=username, password=PASSWORD)
        )
        stamps = received.setdefault(username, [])
        stream = events_pb2_grpc.EventsServiceStub(channel).Subscribe(
            events_pb2.SubscribeRequest(), metadata=md(session.access_token)
        )
        seen_self = False
        async for event in stream:
            arrived = time.time()
            presence = event.presence_changed
            if presence.username == SUBJECT:
                stamps.append((presence.note, arrived))
            elif presence.username == username and not seen_self:
                seen_self = True
                online += 1
                if online == count:
                    all_online.set()

    semaphore = asyncio.Semaphore(50)

    async def start(index: int) -> None:
        async with semaphore:
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(0.005)

    tasks: list[asyncio.Task[None]] = []
    await asyncio.gather(*(start(i) for i in range(first, first + count)))
    await all_online.wait()
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(received), flush=True)
    for channel in channels:
        await channel.close()


# --- The driver. -------------------------------------------------------------------


async def subject_device(channel: grpc.aio.Channel) -> tuple[Any, asyncio.Task[None]]:
    session = await identity_pb2_grpc.IdentityServiceStub(channel).Login(
        identity_pb2.LoginRequest(username=SUBJECT, password=PASSWORD)
    )
    stream = events_pb2_grpc.EventsServiceStub(channel).Subscribe(
        events_pb2.SubscribeRequest(), metadata=md(session.access_token)
    )
    online = asyncio.Event()

    async def drain() -> None:
        async for event in stream:
            if event.presence_changed.username == SUBJECT:
                online.set()

    task = asyncio.create_task(drain())
    await asyncio.wait_for(online.wait(), 30)
    return md(session.access_token), task


async def fanout(port: int, args: argparse.Namespace, workers: list[asyncio.subprocess.Process]) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        presence = presence_pb2_grpc.PresenceServiceStub(channel)
        metadata, drain = await subject_device(channel)
        await asyncio.sleep(0.5)

        sent: dict[str, float] = {}
        for index in range(args.changes):
            await asyncio.sleep(0.35)  # past the coalescing interval: each change is sent at once
            note = f"lat-{index}"
            status = Status.AWAY if index % 2 == 0 else Status.BUSY
            sent[note] = time.time()
            await presence.SetPresence(presence_pb2.SetPresenceRequest(status=status, note=note), metadata=metadata)
        await asyncio.sleep(1.0)

        rpc_latencies: list[float] = []
        counter = 0
        deadline = time.perf_counter() + args.seconds

        async def publisher() -> None:
            nonlocal counter
            while time.perf_counter() < deadline:
                counter += 1
                request = presence_pb2.SetPresenceRequest(
                    status=(Status.AWAY, Status.BUSY, Status.AVAILABLE)[counter % 3], note=f"rate-{counter}"
                )
                started = time.perf_counter()
                await presence.SetPresence(request, metadata=metadata)
                rpc_latencies.append(time.perf_counter() - started)

        rate_started = time.time()
        await asyncio.gather(*(publisher() for _ in range(args.concurrency)))
        rate_seconds = time.time() - rate_started
        await asyncio.sleep(0.5)
        sent["final"] = time.time()
        await presence.SetPresence(
            presence_pb2.SetPresenceRequest(status=Status.AVAILABLE, note="final"), metadata=metadata
        )
        await asyncio.sleep(2.0)
        drain.cancel()

    received: dict[str, list[tuple[str, float]]] = {}
    for worker in workers:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(b"stop\n")
        await worker.stdin.drain()
        line = await worker.stdout.readline()
        received.update(json.loads(line))
        await worker.wait()

    per_watcher: list[float] = []
    per_change: dict[str, float] = {}
    missed = 0
    rate_events = 0
    converged = 0
    for stamps in received.values():
        arrival = {note: at for note, at in stamps}
        for note, at in sent.items():
            if not note.startswith("lat-"):
                continue
            if note not in arrival:
                missed += 1
                continue
            delay = arrival[note] - at
            per_watcher.append(delay)
            per_change[note] = max(per_change.get(note, 0.0), delay)
        rate_events += sum(1 for note, _ in stamps if note.startswith("rate-"))
        converged += "final" in arrival
    return {
        "watchers": len(received),
        "per_watcher": per_watcher,
        "per_change": list(per_change.values()),
        "per_change_by_note": per_change,
        "missed": missed,
        "changes_per_second": len(rpc_latencies) / rate_seconds,
        "rpc_latencies": rpc_latencies,
        "events_per_watcher_per_second": rate_events / max(1, len(received)) / rate_seconds,
        "converged": converged,
    }


def queries(count: int, entries: int) -> list[tuple[str, str]]:
    rng = random.Random(42)
    kinds: list[tuple[str, str]] = []
    for _ in range(count):
        index = rng.randrange(entries)
        record = person(index)
        given, family = record.display_name.split()[:2]
        national = f"6{index:08d}"
        kind = rng.choice(["name", "surname", "email", "national", "e164", "full name", "initials"])
        query = {
            # What a user types first: one or two letters, thousands of matches.
            "initials": rng.choice([given, family])[: rng.randint(1, 2)],
            "name": given[: rng.randint(3, len(given))],
            "surname": family[: rng.randint(3, len(family))],
            "email": record.emails[0][: rng.randint(6, 14)],
            "national": f"{national[:3]} {national[3:5]} {national[5 : rng.randint(6, 9)]}",
            "e164": record.phone_numbers[0],
            "full name": record.display_name,
        }[kind]
        kinds.append((kind, query))
    return kinds


async def search(port: int, args: argparse.Namespace) -> dict[str, list[float]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        session = await identity_pb2_grpc.IdentityServiceStub(channel).Login(
            identity_pb2.LoginRequest(username="searcher", password=PASSWORD)
        )
        metadata = md(session.access_token)
        directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        results: dict[str, list[float]] = {"health check (baseline)": [], "SearchDirectory (all)": []}
        for _ in range(500):  # warm-up
            await health.Check(health_pb2.HealthCheckRequest())
        for _ in range(args.searches):
            started = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest())
            results["health check (baseline)"].append(time.perf_counter() - started)
        found = 0
        for kind, query in queries(args.searches, args.entries):
            started = time.perf_counter()
            reply = await directory.SearchDirectory(
                directory_pb2.SearchDirectoryRequest(query=query), metadata=metadata
            )
            elapsed = time.perf_counter() - started
            found += bool(reply.entries)
            results["SearchDirectory (all)"].append(elapsed)
            results.setdefault(f"  by {kind}", []).append(elapsed)
        results["found"] = [found]
        return results


async def run(args: argparse.Namespace) -> int:
    fan: dict[str, Any] | None = None
    found: dict[str, list[float]] | None = None
    if args.only == "search":
        args.watchers = 0  # no streams to hold: setup only fills the directory
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        env = {
            **os.environ,
            "WAC_DATA_DIR": data,
            "WAC_CORE_LISTEN": f"127.0.0.1:{port}",
            "WAC_LOG_LEVEL": "warning",
            # Every watcher logs in from 127.0.0.1, past the core's
            # per-address rate of anonymous calls: lift it.
            "WAC_CORE_RATE_PER_SECOND": "1000000",
            "WAC_CORE_RATE_BURST": "1000000",
            # Every watcher logs in at once from 127.0.0.1: let them queue.
            "WAC_IDENTITY_LOGIN_QUEUE_PER_ADDRESS": "100000",
            "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "10000",
        }
        url = load_config(None, env).database_url
        await asyncio.to_thread(upgrade, url)
        entries = 0 if args.only == "fanout" else args.entries
        print(f"setup: {args.watchers + 2} subscribers, {args.watchers} contacts, {entries} directory entries")
        filled = await populate(url, args.watchers, entries)
        print(f"setup: directory filled in {filled:.1f} s")
        core = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "core", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        workers: list[asyncio.subprocess.Process] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as probe:
                await asyncio.wait_for(probe.channel_ready(), 60)
            if args.only != "search":
                share = -(-args.watchers // args.workers)
                for first in range(0, args.watchers, share):
                    workers.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            __file__,
                            "--watch",
                            str(port),
                            str(first),
                            str(min(share, args.watchers - first)),
                            stdin=asyncio.subprocess.PIPE,
                            stdout=asyncio.subprocess.PIPE,
                            limit=1 << 28,
                        )
                    )
                started = time.perf_counter()
                for worker in workers:
                    assert worker.stdout is not None
                    line = await asyncio.wait_for(worker.stdout.readline(), 300)
                    assert line.strip() == b"READY", line
                opened = time.perf_counter() - started
                print(f"setup: {args.watchers} watchers logged in with streams open in {opened:.1f} s")
                fan = await fanout(port, args, workers)
                await asyncio.sleep(2.0)  # let the core close the watchers' streams
            if args.only != "fanout":
                found = await search(port, args)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
            core.terminate()
            await asyncio.wait_for(core.wait(), 10)

    if fan is not None:
        report_fanout(fan, args)
    if found is not None:
        report_search(found, args)
    return 0


def report_fanout(fan: dict[str, Any], args: argparse.Namespace) -> None:
    ms = 1e3
    print()
    print(f"Fan-out: 1 subject, {fan['watchers']} watchers with open streams, {args.changes} changes")
    print(f"{'':<44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, samples in (
        ("SetPresence -> event at a watcher", fan["per_watcher"]),
        ("SetPresence -> event at every watcher", fan["per_change"]),
    ):
        print(
            f"{name:<44}{percentile(samples, 0.5) * ms:>10.1f}{percentile(samples, 0.99) * ms:>10.1f}"
            f"{max(samples) * ms:>10.1f}"
        )
    print(f"missed events: {fan['missed']}; target p99 < {TARGET_FANOUT_P99_MS:.0f} ms")
    if os.environ.get("BENCH_VERBOSE"):
        print({k: round(v * 1e3) for k, v in fan["per_change_by_note"].items()})
    print()
    print(f"Sustained: {args.concurrency} callers for {args.seconds:.0f} s, {fan['watchers']} watchers connected")
    lat = fan["rpc_latencies"]
    print(
        f"  status changes accepted: {fan['changes_per_second']:.0f}/s "
        f"(SetPresence p50 {percentile(lat, 0.5) * ms:.1f} ms, p99 {percentile(lat, 0.99) * ms:.1f} ms)"
    )
    print(
        f"  events per watcher: {fan['events_per_watcher_per_second']:.1f}/s (coalesced: one per 250 ms), "
        f"{fan['events_per_watcher_per_second'] * fan['watchers']:.0f} events/s in all"
    )
    print(f"  watchers with the final change: {fan['converged']}/{fan['watchers']}")


def report_search(found: dict[str, list[float]], args: argparse.Namespace) -> None:
    ms = 1e3
    print()
    hits = found.pop("found")[0]
    print(f"Search: {args.entries} directory entries, {args.searches} sequential calls each ({hits} found something)")
    print(f"{'':<44}{'p50 ms':>10}{'p99 ms':>10}")
    for name, samples in found.items():
        print(f"{name:<44}{percentile(samples, 0.5) * ms:>10.2f}{percentile(samples, 0.99) * ms:>10.2f}")
    print(f"target SearchDirectory p99 < {TARGET_SEARCH_P99_MS:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="client processes holding the watchers' streams")
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=1000)
    parser.add_argument("--only", choices=["fanout", "search"], help="run one part (default: both)")
    parser.add_argument("--watch", nargs=3, type=int, metavar=("PORT", "FIRST", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        asyncio.run(watch(*args.watch))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
