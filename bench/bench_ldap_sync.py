"""LDAP sync into an empty SQLite directory, from a real slapd.

Loads N generated people into a private slapd with ldapadd (timed apart),
runs a full sync, changes the phone number of 100 of them with ldapmodify
and runs an incremental sync. Then, without LDAP, fills a directory with
--search-entries entries and times prefix searches on it.

Target: the full sync of 10,000 entries under 15 s.

    .venv/bin/python bench/bench_ldap_sync.py [--entries 10000] [--changes 100]
                                              [--search-entries 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import core.directory.tables  # noqa: E402, F401  (registers the tables)
from connectors.ldap import LdapConnector  # noqa: E402
from core.db.engine import create_engine  # noqa: E402
from core.db.metadata import metadata  # noqa: E402
from core.directory.connector import FetchResult  # noqa: E402
from core.directory.records import DirectoryRecord, RunState  # noqa: E402
from core.directory.runner import SyncRunner  # noqa: E402
from core.directory.store import DirectoryStore  # noqa: E402
from settings.config import sqlite_url  # noqa: E402
from settings.connectors import LdapConfig, parse_connector  # noqa: E402
from tests.support.slapd import PEOPLE_DN, READER_DN, READER_PASSWORD, running_slapd  # noqa: E402

TARGET_FULL_SYNC = 15.0
DEPARTMENTS = ["Sales", "Support", "Engineering", "Finance", "Legal", "Operations"]
GIVEN = ["Ana", "Bruno", "Carla", "David", "Elena", "Fiona", "Gabriel", "Hugo", "Irene", "Jorge"]
FAMILY = ["García", "Díaz", "Ruiz", "Moreno", "Sanz", "Smith", "León", "Navarro", "Vidal", "Castro"]


def _national(i: int) -> str:
    # 6xx xx xx xx: Spanish mobiles, unique per i below 100,000,000.
    digits = f"6{i:08d}"
    return f"{digits[:3]} {digits[3:5]} {digits[5:7]} {digits[7:]}"


def _attr(name: str, value: str) -> str:
    # LDIF values outside ASCII travel in base64 ("name:: ...").
    if value.isascii():
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"


def person_ldif(i: int, number: str) -> str:
    given, family = GIVEN[i % len(GIVEN)], FAMILY[i // len(GIVEN) % len(FAMILY)]
    return (
        f"dn: uid=user{i:06d},{PEOPLE_DN}\n"
        "objectClass: inetOrgPerson\n"
        f"uid: user{i:06d}\n"
        + _attr("cn", f"{given} {family} {i}")
        + _attr("sn", family)
        + _attr("givenName", given)
        + f"telephoneNumber: {number}\n"
        f"mail: user{i:06d}@example.org\n"
        f"ou: {DEPARTMENTS[i % len(DEPARTMENTS)]}\n\n"
    )


class TimedFetch:
    """The connector, with the time of its last fetch kept apart."""

    def __init__(self, inner: LdapConnector) -> None:
        self.inner = inner
        self.name, self.type, self.source = inner.name, inner.type, inner.source
        self.schedule = inner.schedule
        self.last = 0.0

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult:
        started = time.perf_counter()
        try:
            return await self.inner.fetch(cursor, full)
        finally:
            self.last = time.perf_counter() - started


def row(step: str, count: int, seconds: float) -> str:
    rate = f"{count / seconds:,.0f}" if seconds > 0 else "-"
    return f"| {step:<34} | {count:>8,} | {seconds:>8.2f} | {rate:>10} |"


async def bench_ldap(workdir: Path, entries: int, changes: int) -> list[str]:
    lines: list[str] = []
    with running_slapd(workdir / "slapd") as slapd:
        ldif = workdir / "people.ldif"
        ldif.write_text("".join(person_ldif(i, _national(i)) for i in range(entries)))
        started = time.perf_counter()
        slapd.ldapadd(ldif)
        lines.append(row("ldapadd (loading slapd)", entries, time.perf_counter() - started))

        engine = create_engine(sqlite_url(workdir))
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        store = DirectoryStore(engine)
        config = parse_connector(
            "bench",
            {
                "type": "ldap",
                "urls": [slapd.url],
                "bind_dn": READER_DN,
                "bind_password": READER_PASSWORD,
                "base_dn": PEOPLE_DN,
            },
        )
        assert isinstance(config, LdapConfig)
        connector = TimedFetch(LdapConnector(config))
        runner = SyncRunner(store, [connector])

        started = time.perf_counter()
        full = await runner.run("bench")
        full_seconds = time.perf_counter() - started
        if full.state is not RunState.SUCCEEDED or full.added != entries:
            raise SystemExit(f"full sync went wrong: {full}")
        lines.append(row("full sync (empty directory)", entries, full_seconds))
        lines.append(row("  of which LDAP fetch and mapping", entries, connector.last))
        lines.append(row("  of which directory write", entries, full_seconds - connector.last))

        changed = random.Random(7).sample(range(entries), changes)
        slapd.ldapmodify(
            "".join(
                f"dn: uid=user{i:06d},{PEOPLE_DN}\nchangetype: modify\n"
                f"replace: telephoneNumber\ntelephoneNumber: +34 7{i:08d}\n\n"
                for i in changed
            )
        )
        started = time.perf_counter()
        incremental = await runner.run("bench")
        incremental_seconds = time.perf_counter() - started
        if incremental.full or incremental.updated != changes:
            raise SystemExit(f"incremental sync went wrong: {incremental}")
        lines.append(row(f"incremental sync ({changes} changed)", changes, incremental_seconds))
        await engine.dispose()
    verdict = "meets" if full_seconds < TARGET_FULL_SYNC else "MISSES"
    lines.append(f"full sync {verdict} the target of {TARGET_FULL_SYNC:.0f} s")
    return lines


async def bench_search(workdir: Path, entries: int) -> list[str]:
    (workdir / "search").mkdir()
    engine = create_engine(sqlite_url(workdir / "search"))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    store = DirectoryStore(engine)
    records = [
        DirectoryRecord(
            entry_id=str(i),
            display_name=f"{GIVEN[i % 10]} {FAMILY[i // 10 % 10]} {i}",
            phone_numbers=(f"+346{i:08d}",),
            emails=(f"user{i:06d}@example.org",),
        )
        for i in range(entries)
    ]
    started = time.perf_counter()
    await store.replace_source("ldap:search", records)
    lines = [row("directory fill (replace_source)", entries, time.perf_counter() - started)]
    queries = {
        "name word, ~10% match": "ana",
        "name prefix, ~1% match": "ana gar",
        "e-mail prefix": "user0123",
        "phone, national": "600 01 23",
        "phone, E.164 exact": "+34600012345",
        "one letter, everything": "a",
    }
    for label, query in queries.items():
        times = []
        for _ in range(20):
            started = time.perf_counter()
            await store.search(query, 20, "", "ES")
            times.append(time.perf_counter() - started)
        lines.append(f"| search {label:<27} | {statistics.median(times) * 1000:>7.1f} ms median |")
    await engine.dispose()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--search-entries", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wac-bench-ldap-") as tmp:
        workdir = Path(tmp)
        header = [
            f"| {'step':<34} | {'entries':>8} | {'seconds':>8} | {'entries/s':>10} |",
            f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 12}|",
        ]
        lines = await bench_ldap(workdir, args.entries, args.changes)
        print("\n".join(header + lines))
        if args.search_entries:
            print()
            print("\n".join(await bench_search(workdir, args.search_entries)))


if __name__ == "__main__":
    asyncio.run(main())
