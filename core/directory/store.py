"""Directory storage: entries with their search keys, connector runs and
cursors. SQL only (SQLAlchemy Core, the same statements on SQLite and
PostgreSQL); it knows nothing of gRPC or of any connector's protocol.

Every write to entries is one transaction: a reader sees a source either
before or after a sync, never half of it, and a failure changes nothing.
Writes to one source are serialised by the caller (the sync runner holds a
lock per connector), which is why a diff read before the first write is safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import paging
from core.directory import search as s
from core.directory import tables as t
from core.directory.keys import entry_keys, fold, key_prefixes, query_keys
from core.directory.records import (
    Checkpoint,
    ConnectorState,
    Counts,
    DirectoryRecord,
    RunState,
    StoredEntry,
    SyncRunRecord,
    storable,
    storable_text,
)
from core.failures import Invalid

MAX_PAGE_SIZE = 1000
# Bound on the values in one IN (...) list; SQLite allowed 999 parameters
# before 3.32 and some builds still do.
_CHUNK = 500
# Writes of more entries than this prepare their rows off the event loop.
_THREAD_THRESHOLD = 200


def record_digest(record: DirectoryRecord) -> str:
    """A fingerprint of everything stored about a record."""
    payload = json.dumps(
        [
            record.display_name,
            list(record.phone_numbers),
            list(record.emails),
            record.department,
            record.subscriber,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dedupe(records: Iterable[DirectoryRecord]) -> dict[str, DirectoryRecord]:
    # A source listing one id twice means the later one, as a re-read would.
    return {r.entry_id: r for r in map(storable, records)}


def _entry_values(source: str, record: DirectoryRecord, now: float) -> dict[str, Any]:
    return {
        "source": source,
        "entry_id": record.entry_id,
        "display_name": record.display_name,
        "sort_name": fold(record.display_name)[:255],
        "phone_numbers": json.dumps(list(record.phone_numbers)),
        "emails": json.dumps(list(record.emails)),
        "department": record.department,
        "subscriber": record.subscriber,
        "digest": record_digest(record),
        "updated_at": now,
    }


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rows a write inserts and updates, and every written entry's keys."""

    added: list[dict[str, Any]]
    changed: list[dict[str, Any]]  # with "row_id"
    keys: dict[str, dict[str, str]]  # entry_id -> key -> kind
    prefixes: dict[str, set[str]]  # entry_id -> the keys' first characters


def _plan(
    source: str,
    incoming: dict[str, DirectoryRecord],
    existing: dict[str, tuple[int, str]],
    now: float,
) -> _Plan:
    added: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    keys: dict[str, dict[str, str]] = {}
    prefixes: dict[str, set[str]] = {}
    for entry_id, record in incoming.items():
        values = _entry_values(source, record, now)
        if entry_id in existing:
            row_id, digest = existing[entry_id]
            if digest == values["digest"]:
                continue  # unchanged: not rewritten, not counted
            changed.append({"row_id": row_id, **values})
        else:
            added.append(values)
        keys[entry_id] = entry_keys(record.display_name, record.emails, record.phone_numbers)
        prefixes[entry_id] = key_prefixes(keys[entry_id])
    return _Plan(added, changed, keys, prefixes)


async def _insert_keys(conn: AsyncConnection, plan: _Plan, rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Insert the keys and key prefixes of the entries ``rows`` (row id, entry values)."""
    keys: list[dict[str, Any]] = []
    prefixes: list[dict[str, Any]] = []
    for row_id, values in rows:
        entry_id, sort_name = values["entry_id"], values["sort_name"]
        keys += (
            {"entry_row_id": row_id, "key": key, "kind": kind, "sort_name": sort_name}
            for key, kind in plan.keys[entry_id].items()
        )
        prefixes += (
            {"entry_row_id": row_id, "prefix": prefix, "sort_name": sort_name} for prefix in plan.prefixes[entry_id]
        )
    if keys:
        await conn.execute(insert(t.directory_keys), keys)
    if prefixes:
        await conn.execute(insert(t.directory_key_prefixes), prefixes)


async def _delete_keys(conn: AsyncConnection, row_ids: Sequence[int]) -> None:
    k, p = t.directory_keys, t.directory_key_prefixes
    for chunk in _chunks(row_ids):
        await conn.execute(delete(k).where(k.c.entry_row_id.in_(chunk)))
        await conn.execute(delete(p).where(p.c.entry_row_id.in_(chunk)))


def _stored(row: Any) -> StoredEntry:
    m = row._mapping
    record = DirectoryRecord(
        entry_id=m["entry_id"],
        display_name=m["display_name"],
        phone_numbers=tuple(json.loads(m["phone_numbers"])),
        emails=tuple(json.loads(m["emails"])),
        department=m["department"],
        subscriber=m["subscriber"],
    )
    return StoredEntry(source=m["source"], record=record, updated_at=m["updated_at"])


def _run(row: Any) -> SyncRunRecord:
    m = row._mapping
    return SyncRunRecord(
        run_id=m["id"],
        connector=m["connector"],
        state=RunState(m["state"]),
        full=bool(m["full"]),
        start_time=m["start_time"],
        end_time=m["end_time"],
        added=m["added"],
        updated=m["updated"],
        removed=m["removed"],
        skipped=m["skipped"],
        error=m["error"],
    )


def _position(token: str, fingerprint: str) -> tuple[int, str, int]:
    position = paging.decode_token(token)
    if not (isinstance(position, list) and len(position) == 4):
        raise paging.invalid_token()
    token_fingerprint, rank, sort_name, row_id = position
    # bool is an int to isinstance, and True == 1: refuse it by type.
    if not (
        isinstance(token_fingerprint, str)
        and type(rank) is int
        and rank in (0, 1)
        and isinstance(sort_name, str)
        and type(row_id) is int
    ):
        raise paging.invalid_token()
    if token_fingerprint != fingerprint:
        raise Invalid("page_token", "belongs to another query")
    return rank, sort_name, row_id


async def _first(conn: AsyncConnection, stmt: Any, values: dict[str, Any]) -> list[Any]:
    """The first ``values["limit"]`` distinct entries that ``stmt``'s pages
    hold, in (sort_name, id) order."""
    rows = {row.id: row for row in await conn.execute(stmt, values)}
    return sorted(rows.values(), key=lambda row: (row.sort_name, row.id))[: values["limit"]]


class DirectoryStore:
    """The shared directory on one SQL database."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def clock(self) -> Callable[[], float]:
        """The time source for every recorded time; the runner decides by it too."""
        return self._clock

    # -- entries ------------------------------------------------------------

    async def replace_source(
        self,
        source: str,
        records: Iterable[DirectoryRecord],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> Counts:
        """Make ``records`` the source's whole content (a full sync): new ids
        are added, changed ones updated, missing ones removed."""
        incoming = _dedupe(records)
        async with self._engine.begin() as conn:
            existing = await self._digests(conn, source, None)
            counts = await self._write(conn, source, incoming, existing, deleted=list(existing))
            if checkpoint is not None:
                await self._put_state(conn, checkpoint)
        return counts

    async def apply_changes(
        self,
        source: str,
        upserts: Iterable[DirectoryRecord],
        deleted_ids: Iterable[str],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> Counts:
        """Add or update ``upserts`` and remove ``deleted_ids`` (an incremental sync)."""
        incoming = _dedupe(upserts)
        gone = [i for i in dict.fromkeys(map(storable_text, deleted_ids)) if i not in incoming]
        async with self._engine.begin() as conn:
            existing = await self._digests(conn, source, [*incoming, *gone])
            counts = await self._write(conn, source, incoming, existing, deleted=gone)
            if checkpoint is not None:
                await self._put_state(conn, checkpoint)
        return counts

    async def upsert_entry(self, source: str, record: DirectoryRecord) -> bool:
        """Add or update one entry; whether anything changed."""
        counts = await self.apply_changes(source, [record], [])
        return bool(counts.added or counts.updated)

    async def delete_entry(self, source: str, entry_id: str) -> bool:
        """Remove one entry; whether it was there."""
        counts = await self.apply_changes(source, [], [entry_id])
        return bool(counts.removed)

    async def delete_source(self, source: str) -> int:
        """Remove every entry of a source; how many there were."""
        counts = await self.replace_source(source, [])
        return counts.removed

    async def get_entry(self, source: str, entry_id: str) -> StoredEntry | None:
        e = t.directory_entries
        async with self._engine.connect() as conn:
            where = (e.c.source == source, e.c.entry_id == storable_text(entry_id))
            row = (await conn.execute(select(e).where(*where))).first()
        return None if row is None else _stored(row)

    async def count(self, source: str | None = None) -> int:
        e = t.directory_entries
        stmt = select(func.count()).select_from(e)
        if source is not None:
            stmt = stmt.where(e.c.source == source)
        async with self._engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def search(
        self,
        query: str,
        page_size: int = 20,
        page_token: str = "",
        default_region: str = "ES",
        *,
        viewer: str | None = None,
    ) -> tuple[list[StoredEntry], str]:
        """Entries with a key starting with the query: exact matches first,
        then by folded display name. Returns the page and the token for the
        next one ("" on the last page). A token from another query, or none
        at all, is INVALID_ARGUMENT naming page_token.

        With a ``viewer``, personal sources other than the viewer's own are
        left out (``core.directory.sources``); without one, nothing is.

        Each rank is read a page at a time in display-name order, from an
        index wherever the matches are many (``core.directory.search``), so
        the cost follows the page size, not the number of matches.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
        keys = query_keys(query, default_region)
        if not keys:
            return [], ""
        fingerprint = hashlib.blake2b(json.dumps([keys, default_region, viewer]).encode(), digest_size=8).hexdigest()
        rank, position = 0, None
        if page_token:
            rank, sort_name, row_id = _position(page_token, fingerprint)
            position = (sort_name, row_id)

        # One more than the page, to know whether there is a next one.
        want = page_size + 1
        found: list[tuple[int, Any]] = []  # (rank, entry row)
        after, seen = position is not None, viewer is not None
        async with self._engine.connect() as conn:
            if rank == 0:
                values = s.parameters(keys, position, want, viewer)
                found += ((0, row) for row in await _first(conn, s.exact_statement(len(keys), after, seen), values))
            if len(found) < want:
                after = after and rank == 1
                values = s.parameters(keys, position if after else None, want - len(found), viewer)
                counts = (await conn.execute(s.count_statement(len(keys)), values)).one()
                ways = tuple(s.way(key, count) for key, count in zip(keys, counts, strict=True))
                found += ((1, row) for row in await _first(conn, s.prefix_statement(ways, after, seen), values))
        entries = [_stored(row) for _, row in found[:page_size]]
        if len(found) <= page_size:
            return entries, ""
        last_rank, last = found[page_size - 1]
        return entries, paging.encode_token([fingerprint, last_rank, last.sort_name, last.id])

    async def _digests(
        self, conn: AsyncConnection, source: str, entry_ids: Sequence[str] | None
    ) -> dict[str, tuple[int, str]]:
        """entry_id → (row id, digest) for the source, or for some of its ids."""
        e = t.directory_entries
        base = select(e.c.entry_id, e.c.id, e.c.digest).where(e.c.source == source)
        if entry_ids is None:
            result = await conn.execute(base)
            return {r.entry_id: (r.id, r.digest) for r in result}
        found: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(list(entry_ids)):
            result = await conn.execute(base.where(e.c.entry_id.in_(chunk)))
            found.update({r.entry_id: (r.id, r.digest) for r in result})
        return found

    async def _write(
        self,
        conn: AsyncConnection,
        source: str,
        incoming: dict[str, DirectoryRecord],
        existing: dict[str, tuple[int, str]],
        *,
        deleted: Iterable[str],
    ) -> Counts:
        now = self._clock()
        gone = [existing[i][0] for i in deleted if i in existing and i not in incoming]
        if len(incoming) > _THREAD_THRESHOLD:
            # Digests, folding and phone parsing cost about 100 µs an entry:
            # a big sync prepares its rows in a worker thread so that the
            # core's event loop keeps serving calls meanwhile.
            plan = await asyncio.to_thread(_plan, source, incoming, existing, now)
        else:
            plan = _plan(source, incoming, existing, now)

        e = t.directory_entries
        await _delete_keys(conn, gone)
        for chunk in _chunks(gone):
            await conn.execute(delete(e).where(e.c.id.in_(chunk)))

        if plan.changed:
            await conn.execute(
                update(e)
                .where(e.c.id == bindparam("row_id"))
                .values({name: bindparam(name) for name in plan.changed[0] if name != "row_id"}),
                plan.changed,
            )
            await _delete_keys(conn, [row["row_id"] for row in plan.changed])
            await _insert_keys(conn, plan, [(row["row_id"], row) for row in plan.changed])

        if plan.added:
            # A plain executemany, then the ids read back: RETURNING with the
            # ids in parameter order falls back to one INSERT per row on SQLite.
            await conn.execute(insert(e), plan.added)
            ids = await self._row_ids(conn, source, [row["entry_id"] for row in plan.added])
            await _insert_keys(conn, plan, [(ids[row["entry_id"]], row) for row in plan.added])

        return Counts(added=len(plan.added), updated=len(plan.changed), removed=len(gone))

    @staticmethod
    async def _row_ids(conn: AsyncConnection, source: str, entry_ids: Sequence[str]) -> dict[str, int]:
        e = t.directory_entries
        base = select(e.c.entry_id, e.c.id).where(e.c.source == source)
        if len(entry_ids) > _CHUNK:
            # Many ids: one scan of the source beats many IN lists.
            return {r.entry_id: r.id for r in await conn.execute(base)}
        result = await conn.execute(base.where(e.c.entry_id.in_(entry_ids)))
        return {r.entry_id: r.id for r in result}

    # -- runs and cursors -----------------------------------------------------

    async def start_run(self, connector: str, *, full: bool) -> SyncRunRecord:
        """Record a run as RUNNING from now."""
        r = t.sync_runs
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(r)
                .values(
                    connector=connector,
                    state=RunState.RUNNING.value,
                    full=full,
                    start_time=self._clock(),
                    error="",
                    added=0,
                    updated=0,
                    removed=0,
                    skipped=0,
                )
                .returning(r)
            )
            return _run(result.one())

    async def finish_run(
        self,
        run_id: int,
        *,
        state: RunState,
        counts: Counts | None = None,
        skipped: int = 0,
        error: str = "",
        full: bool | None = None,
    ) -> SyncRunRecord:
        """Record how a run ended. ``full`` corrects the kind of run when the
        connector had to read everything after all (an expired sync token)."""
        r = t.sync_runs
        counts = counts or Counts()
        values: dict[str, Any] = {
            "state": state.value,
            "end_time": self._clock(),
            "added": counts.added,
            "updated": counts.updated,
            "removed": counts.removed,
            "skipped": skipped,
            "error": error,
        }
        if full is not None:
            values["full"] = full
        async with self._engine.begin() as conn:
            result = await conn.execute(update(r).where(r.c.id == run_id).values(values).returning(r))
            return _run(result.one())

    async def last_run(self, connector: str) -> SyncRunRecord | None:
        r = t.sync_runs
        stmt = select(r).where(r.c.connector == connector).order_by(r.c.id.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _run(row)

    async def fail_interrupted_runs(self, connector: str | None = None) -> int:
        """Mark runs left RUNNING by a process that stopped as FAILED (only
        ``connector``'s if given); call when no such run can be under way:
        at start-up, before any run begins, or holding the connector's lease."""
        r = t.sync_runs
        running = r.c.state == RunState.RUNNING.value
        if connector is not None:
            running = and_(running, r.c.connector == connector)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(r)
                .where(running)
                .values(
                    state=RunState.FAILED.value,
                    end_time=self._clock(),
                    error="interrupted: wac stopped during the run",
                )
            )
            return result.rowcount or 0

    async def running_connectors(self) -> list[str]:
        """The connectors with a run recorded as RUNNING."""
        r = t.sync_runs
        stmt = select(r.c.connector).where(r.c.state == RunState.RUNNING.value).distinct()
        async with self._engine.connect() as conn:
            return [row.connector for row in await conn.execute(stmt)]

    async def connector_state(self, connector: str) -> ConnectorState:
        s = t.connector_state
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(s).where(s.c.connector == connector))).first()
        if row is None:
            return ConnectorState()
        m = row._mapping
        cursor = None if m["cursor"] is None else json.loads(m["cursor"])
        return ConnectorState(cursor=cursor, last_full_time=m["last_full_time"])

    async def get_cursor(self, connector: str) -> dict[str, Any] | None:
        return (await self.connector_state(connector)).cursor

    async def put_cursor(self, connector: str, cursor: dict[str, Any] | None, *, full: bool = False) -> None:
        async with self._engine.begin() as conn:
            await self._put_state(conn, Checkpoint(connector, cursor, full))

    async def forget_connector(self, connector: str) -> None:
        """Drop a connector's cursor, so its next run reads everything."""
        s = t.connector_state
        async with self._engine.begin() as conn:
            await conn.execute(delete(s).where(s.c.connector == connector))

    async def _put_state(self, conn: AsyncConnection, checkpoint: Checkpoint) -> None:
        s = t.connector_state
        cursor = None if checkpoint.cursor is None else json.dumps(checkpoint.cursor)
        values: dict[str, Any] = {"cursor": cursor}
        if checkpoint.full:
            values["last_full_time"] = self._clock()
        # Update-then-insert rather than an upsert: ON CONFLICT is spelled
        # per dialect, and the caller's lock means no one races us here.
        result = await conn.execute(update(s).where(s.c.connector == checkpoint.connector).values(values))
        if not result.rowcount:
            await conn.execute(insert(s).values(connector=checkpoint.connector, **values))
