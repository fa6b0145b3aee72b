"""The calls store on SQLite and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.calls import tables as t
from core.calls.machine import CallInfo, CallState, EndReason, Media
from core.calls.store import CallStore, CallWrite
from core.db.engine import create_engine
from core.db.work import dispose
from settings.config import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallStore]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(t.calls.create)
    try:
        yield CallStore(engine)
    finally:
        await dispose(engine)


def call(call_id: str, caller: str, callee: str, when: float, state: CallState = CallState.RINGING) -> CallInfo:
    return CallInfo(
        call_id=call_id,
        caller=caller,
        caller_device=f"{caller}-1",
        callee=callee,
        state=state,
        media=Media(audio=True, video=call_id.endswith("v")),
        offered_devices=(f"{callee}-1", f"{callee}-2"),
        callee_device=None,
        create_time=when,
        answer_time=None,
        end_time=None,
        end_reason=None,
        ended_by=None,
        end_detail="",
    )


async def test_rows_round_trip_and_live_snapshots(store: CallStore) -> None:
    ringing = call("c1v", "alice", "bob", 100.0)
    await store.write_batch([CallWrite(ringing, {"version": 1, "x": [1]}, new=True)])
    stored = await store.get("c1v")
    assert stored is not None and stored.call == ringing and stored.snapshot == {"version": 1, "x": [1]}
    assert await store.live_snapshots() == [("c1v", {"version": 1, "x": [1]})]

    ended = dataclasses.replace(
        ringing,
        state=CallState.ENDED,
        callee_device="bob-2",
        answer_time=101.5,
        end_time=160.25,
        end_reason=EndReason.COMPLETED,
        ended_by="bob",
        end_detail="the callee hung up",
    )
    other = call("c2", "carol", "bob", 102.0)
    await store.write_batch([CallWrite(ended, None), CallWrite(other, {"version": 1}, new=True)])
    stored = await store.get("c1v")
    assert stored is not None and stored.call == ended and stored.snapshot is None
    assert stored.call.duration == pytest.approx(58.75)
    assert [call_id for call_id, _ in await store.live_snapshots()] == ["c2"]
    assert await store.get("nope") is None


async def test_a_failed_batch_writes_nothing(store: CallStore) -> None:
    await store.write_batch([CallWrite(call("c1", "alice", "bob", 1.0), None, new=True)])
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError, whichever it is
        await store.write_batch(
            [
                CallWrite(call("c2", "alice", "bob", 2.0), None, new=True),
                CallWrite(call("c1", "alice", "bob", 1.0), None, new=True),  # duplicate key
            ]
        )
    assert await store.get("c2") is None


async def test_list_newest_first_by_party_state_and_position(store: CallStore) -> None:
    rows = [
        call("a", "alice", "bob", 1.0),
        call("b", "bob", "alice", 2.0),
        call("c", "carol", "bob", 3.0),
        call("d", "alice", "carol", 4.0, CallState.ENDED),
        call("e", "alice", "bob", 4.0),  # same time as d: call id breaks the tie
    ]
    await store.write_batch([CallWrite(r, None, new=True) for r in rows])

    async def ids(**kw: object) -> list[str]:
        options = {"party": None, "state": None, "before": None, "limit": 100, **kw}
        return [c.call_id for c in await store.list_calls(**options)]  # type: ignore[arg-type]

    assert await ids() == ["e", "d", "c", "b", "a"]
    assert await ids(party="alice") == ["e", "d", "b", "a"]
    assert await ids(party="alice", limit=2) == ["e", "d"]
    assert await ids(party="alice", before=(4.0, "d")) == ["b", "a"]
    assert await ids(party="alice", state=CallState.ENDED) == ["d"]
    assert await ids(party="bob", state=CallState.RINGING, before=(3.0, "c")) == ["b", "a"]
    assert await ids(before=(4.0, "e"), limit=1) == ["d"]
