"""Whether this core can serve now (readiness), from checks of what it
depends on: the database (reachable, and at the schema this code needs)
and, when configured, the SIP gateway.

Every probe runs concurrently with a short timeout, and the result is kept
for ``max_age`` seconds, one evaluation at a time: however many probes ask
(Envoy's health checks, the edges, an orchestrator), the database sees at
most one check a second. A check's reason is written for an operator and
names no secret (no database URL, no stack trace); what went wrong in
detail goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("wac.core")

# Seconds a probe may take before it counts as failed.
PROBE_TIMEOUT = 0.5
# Seconds a result is reused: probes cannot load what they check.
MAX_AGE = 1.0

VERSIONS = Path(__file__).parent / "db" / "migrations" / "versions"


class NotReady(Exception):
    """A check failed; the message is the operator's reason."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str = ""


Probe = Callable[[], Awaitable[None]]


class Readiness:
    """Named probes, each raising NotReady (or anything) when its part is not ready."""

    def __init__(
        self,
        probes: Sequence[tuple[str, Probe]],
        *,
        timeout: float = PROBE_TIMEOUT,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = list(probes)
        self._timeout = timeout
        self._max_age = max_age
        self._clock = clock
        self._last: tuple[CheckResult, ...] | None = None
        self._at = 0.0
        self._running: asyncio.Task[tuple[CheckResult, ...]] | None = None

    async def results(self) -> tuple[CheckResult, ...]:
        """Every check's result, at most ``max_age`` seconds old."""
        if self._last is not None and self._clock() - self._at < self._max_age:
            return self._last
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._evaluate(), name="readiness")
        # Shielded: a caller that gives up does not cancel the others' answer.
        return await asyncio.shield(self._running)

    async def _evaluate(self) -> tuple[CheckResult, ...]:
        results = tuple(await asyncio.gather(*(self._run(name, probe) for name, probe in self._probes)))
        self._last, self._at = results, self._clock()
        return results

    async def _run(self, name: str, probe: Probe) -> CheckResult:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except NotReady as exc:
            return CheckResult(name, False, str(exc))
        except TimeoutError:
            return CheckResult(name, False, f"no answer within {self._timeout:g} s")
        except Exception:
            log.warning("readiness check %s failed", name, exc_info=True)
            return CheckResult(name, False, "the check failed (see the core's log)")
        return CheckResult(name, True)


def head_revision(versions: Path = VERSIONS) -> str:
    """The newest schema revision of the migrations, read from their files:
    the serving core does not load Alembic (9 MiB) to know it."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = re.search(r'^revision\s*=\s*["\']([^"\']+)["\']', source, re.MULTILINE)
        parent = re.search(r'^down_revision\s*=\s*["\']([^"\']+)["\']', source, re.MULTILINE)
        if found:
            revisions.add(found.group(1))
        if parent:
            parents.add(parent.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def database_probe(url: str, engine: AsyncEngine, head: str) -> Probe:
    """Reachable and migrated: the stored revision is ``head``.

    SQLite is checked on a fresh connection (in a thread): the pool's open
    connections keep working on a file that was moved away or whose disk
    went, and the next connection would not. PostgreSQL through the pool,
    whose connections break when the server goes."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]

        def read_sqlite() -> str | None:
            try:
                # mode=rw: never creates the file it checks.
                connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PROBE_TIMEOUT)
            except sqlite3.Error as exc:
                raise NotReady(f"unreachable: cannot open the SQLite file ({exc})") from None
            try:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.Error as exc:
                raise NotReady(f"unreachable: cannot read the SQLite file ({exc})") from None
            finally:
                connection.close()
            return None if row is None else str(row[0])

        async def read() -> str | None:
            return await asyncio.to_thread(read_sqlite)

    else:

        async def read() -> str | None:
            try:
                async with engine.connect() as connection:
                    row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
            except (OSError, ConnectionError) as exc:
                raise NotReady(f"unreachable ({type(exc).__name__})") from None
            except Exception as exc:
                # The driver's errors (asyncpg, SQLAlchemy) name the server
                # and the database, never the password; the class is enough.
                log.warning("database readiness check failed: %s", exc)
                raise NotReady(f"unreachable ({type(exc).__name__})") from None
            return None if row is None else str(row[0])

    async def probe() -> None:
        revision = await read()
        if revision != head:
            raise NotReady(f"not migrated: the schema is at {revision or 'no revision'}, this core needs {head}")

    return probe


def gateway_probe(rpc: Any) -> Probe:
    """Kamailio answers its JSON-RPC (``core.version``)."""

    async def probe() -> None:
        try:
            await rpc.call("core.version")
        except Exception as exc:
            log.debug("gateway readiness check failed: %s", exc)
            raise NotReady("Kamailio does not answer on its JSON-RPC listener") from None

    return probe
