"""Calls storage: call rows and the snapshots of live calls. SQL only; it
knows nothing of gRPC or of the signalling rules."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, tuple_, union_all, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from core.calls import tables as t
from core.calls.machine import CallInfo, CallState, EndReason, Media, Via
from core.db.work import work_for

_LIVE_STATES = (CallState.RINGING.value, CallState.ACTIVE.value)


@dataclass(frozen=True, slots=True)
class CallWrite:
    """One call row to write: a new call (insert) or a call's new state."""

    call: CallInfo
    snapshot: Mapping[str, Any] | None
    new: bool = False


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A call row: the call, and the machine snapshot while it is live."""

    call: CallInfo
    snapshot: dict[str, Any] | None


def _values(call: CallInfo, snapshot: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "caller": call.caller,
        "callee": call.callee,
        "caller_device": call.caller_device,
        "callee_device": call.callee_device,
        "media_audio": call.media.audio,
        "media_video": call.media.video,
        "state": call.state.value,
        "create_time": call.create_time,
        "answer_time": call.answer_time,
        "end_time": call.end_time,
        "end_reason": call.end_reason.value if call.end_reason else None,
        "ended_by": call.ended_by,
        "end_detail": call.end_detail,
        "offered_devices": json.dumps(list(call.offered_devices)),
        "snapshot": json.dumps(snapshot, separators=(",", ":")) if snapshot is not None else None,
        "via": call.via.value,
        "sip_call_id": call.sip_call_id or None,
    }


def _call(row: Any) -> CallInfo:
    m = row._mapping
    return CallInfo(
        call_id=m["call_id"],
        caller=m["caller"],
        caller_device=m["caller_device"],
        callee=m["callee"],
        state=CallState(m["state"]),
        media=Media(audio=bool(m["media_audio"]), video=bool(m["media_video"])),
        offered_devices=tuple(json.loads(m["offered_devices"])),
        callee_device=m["callee_device"],
        create_time=m["create_time"],
        answer_time=m["answer_time"],
        end_time=m["end_time"],
        end_reason=EndReason(m["end_reason"]) if m["end_reason"] else None,
        ended_by=m["ended_by"],
        end_detail=m["end_detail"] or "",
        via=Via(m["via"]),
        sip_call_id=m["sip_call_id"] or "",
    )


# One statement for every batch: executemany binds each row's values.
_INSERT = insert(t.calls)
_UPDATE = update(t.calls).where(t.calls.c.call_id == bindparam("key"))


class CallStore:
    """Each method is one unit of work (``core.db.work``): a call setup
    writes three or four times."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._work = work_for(engine)

    async def write_batch(self, writes: Sequence[CallWrite]) -> None:
        """Write several calls in one transaction: all of them or none.

        Each call appears at most once; new calls are inserted, the others
        updated.
        """
        inserts = [{"call_id": w.call.call_id, **_values(w.call, w.snapshot)} for w in writes if w.new]
        updates = [{"key": w.call.call_id, **_values(w.call, w.snapshot)} for w in writes if not w.new]

        def run(conn: Connection) -> None:
            if inserts:
                conn.execute(_INSERT, inserts)
            if updates:
                conn.execute(_UPDATE, updates)

        await self._work.write(run)

    async def get(self, call_id: str) -> StoredCall | None:
        stmt = select(t.calls).where(t.calls.c.call_id == call_id)
        row = await self._work.read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        raw = row._mapping["snapshot"]
        return StoredCall(_call(row), json.loads(raw) if raw else None)

    async def live_snapshots(self) -> list[tuple[str, dict[str, Any]]]:
        """(call id, snapshot) of every call of the call machine (WAPI) that
        has not ended."""
        c = t.calls.c
        query = select(c.call_id, c.snapshot).where(c.state.in_(_LIVE_STATES), c.via == Via.WAPI.value)
        rows = await self._work.read(lambda conn: conn.execute(query).all())
        return [(r[0], json.loads(r[1])) for r in rows if r[1]]

    async def live_calls(self, via: Via) -> list[StoredCall]:
        """The calls of one path that have not ended, with their snapshots."""
        c = t.calls.c
        query = select(t.calls).where(c.state.in_(_LIVE_STATES), c.via == via.value)
        rows = await self._work.read(lambda conn: conn.execute(query).all())
        return [
            StoredCall(_call(r), json.loads(r._mapping["snapshot"]) if r._mapping["snapshot"] else None) for r in rows
        ]

    async def list_calls(
        self,
        *,
        party: str | None,
        state: CallState | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> list[CallInfo]:
        """Calls newest first (create time, then call id, both descending).

        ``party`` keeps the calls it placed or received; ``before`` is the
        (create time, call id) of the last call of the previous page.
        """
        c = t.calls.c
        where = []
        if state is not None:
            where.append(c.state == state.value)
        if before is not None:
            time, call_id = before
            # A row value: the database seeks in the index instead of filtering.
            where.append(tuple_(c.create_time, c.call_id) < tuple_(time, call_id))
        order = (c.create_time.desc(), c.call_id.desc())
        query: Select[Any]
        if party is None:
            query = select(t.calls).where(*where).order_by(*order).limit(limit)
        else:
            # Two index walks (as caller, as callee) merged: an OR would make
            # the database sort every call of the subscriber for each page.
            # A subscriber never calls itself, so the halves are disjoint.
            halves = [
                select(t.calls).where(column == party, *where).order_by(*order).limit(limit).subquery()
                for column in (c.caller, c.callee)
            ]
            merged = union_all(*(select(h) for h in halves)).subquery()
            query = select(merged).order_by(merged.c.create_time.desc(), merged.c.call_id.desc()).limit(limit)
        return await self._work.read(lambda conn: [_call(r) for r in conn.execute(query)])
