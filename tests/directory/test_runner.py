"""SyncRunner with scripted connectors: locking, recording, scheduling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core import errors, metrics
from core.directory.connector import FetchError, FetchResult, PermanentFetchError, Schedule
from core.directory.records import DirectoryRecord, RunState
from core.directory.runner import AlreadyRunning, SyncRunner, UnknownConnector
from core.directory.store import DirectoryStore


@pytest.fixture
def store(sqlite_engine: AsyncEngine) -> DirectoryStore:
    return DirectoryStore(sqlite_engine)


def rec(i: int, phone: str = "") -> DirectoryRecord:
    return DirectoryRecord(str(i), f"Person {i}", (phone or f"+3460000{i:04d}",), ())


class Scripted:
    """A connector whose fetches are queued results or exceptions."""

    type = "test"

    def __init__(self, name: str = "t", schedule: Schedule | None = None) -> None:
        self.name = name
        self.source = f"test:{name}"
        self.schedule = schedule or Schedule()
        self.script: list[FetchResult | Exception] = []
        self.calls: list[tuple[dict[str, Any] | None, bool]] = []
        self.gate: asyncio.Event | None = None

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult:
        self.calls.append((cursor, full))
        if self.gate is not None:
            await self.gate.wait()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


async def test_runs_are_recorded_and_cursors_kept(store: DirectoryStore) -> None:
    c = Scripted()
    c.script = [
        FetchResult(full=True, records=(rec(1), rec(2)), skipped=1, cursor={"n": 1}),
        FetchResult(full=False, records=(rec(3),), deleted_ids=("1",), cursor={"n": 2}),
    ]
    runner = SyncRunner(store, [c])
    first = await runner.run("t")
    assert (first.state, first.full, first.added, first.skipped) == (RunState.SUCCEEDED, True, 2, 1)
    second = await runner.run("t")
    assert (second.full, second.added, second.removed) == (False, 1, 1)
    assert c.calls == [(None, True), ({"n": 1}, False)]
    assert await store.get_cursor("t") == {"n": 2}
    assert await store.last_run("t") == second


async def test_failed_fetch_changes_nothing(store: DirectoryStore) -> None:
    c = Scripted()
    c.script = [
        FetchResult(full=True, records=(rec(1),), cursor={"n": 1}),
        FetchError("the server said no"),
    ]
    runner = SyncRunner(store, [c])
    await runner.run("t")
    failed = await runner.run("t", full=True)
    assert (failed.state, failed.error) == (RunState.FAILED, "the server said no")
    assert failed.end_time is not None
    assert await store.count("test:t") == 1
    assert await store.get_cursor("t") == {"n": 1}


async def test_a_bad_record_fails_the_run_and_changes_nothing(store: DirectoryStore) -> None:
    c = Scripted()
    c.script = [
        FetchResult(full=True, records=(rec(1),), cursor={"n": 1}),
        FetchResult(full=True, records=(rec(2), rec(3, phone="garbage")), cursor={"n": 2}),
    ]
    runner = SyncRunner(store, [c])
    await runner.run("t")
    failed = await runner.run("t")
    assert failed.state is RunState.FAILED and "InvalidPhoneNumber" in failed.error
    assert [e.record.entry_id for e in (await store.search("person", 10))[0]] == ["1"]
    assert await store.get_cursor("t") == {"n": 1}


async def test_one_run_at_a_time(store: DirectoryStore) -> None:
    c = Scripted()
    c.gate = asyncio.Event()
    c.script = [FetchResult(full=True, records=())]
    runner = SyncRunner(store, [c])
    first = asyncio.create_task(runner.run("t"))
    await asyncio.sleep(0.01)
    assert runner.is_running("t")
    with pytest.raises(AlreadyRunning) as caught:
        await runner.run("t")
    assert errors.from_failure(caught.value).code.name == "ABORTED" and "already running" in caught.value.message
    c.gate.set()
    assert (await first).state is RunState.SUCCEEDED
    with pytest.raises(UnknownConnector):
        await runner.run("nope")


async def test_schedule_runs_retries_and_drops_permanent_failures(
    store: DirectoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.directory import schedule

    monkeypatch.setattr(schedule, "FIRST_RETRY", 0.01)
    c = Scripted(schedule=Schedule(interval=0.02, full_every=None))
    c.script = [
        FetchResult(full=True, records=(rec(1),), cursor={"n": 1}),
        FetchError("flaky"),
        FetchResult(full=False, records=(rec(2),), cursor={"n": 2}),
        PermanentFetchError("gone for good"),
    ]
    failures: list[Exception] = []

    async def on_failure(_c: object, exc: Exception) -> None:
        failures.append(exc)

    runner = SyncRunner(store, [c], on_failure=on_failure)
    task = asyncio.create_task(runner.run_forever())
    for _ in range(200):
        if not c.script:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a dropped connector is not run again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(c.calls) == 4
    assert [str(f) for f in failures] == ["flaky", "gone for good"]
    assert await store.count("test:t") == 2


async def test_connectors_join_and_leave_the_schedule(store: DirectoryStore) -> None:
    runner = SyncRunner(store)
    task = asyncio.create_task(runner.run_forever())
    await asyncio.sleep(0)
    c = Scripted("late", Schedule(interval=3600))
    c.script = [FetchResult(full=True, records=(rec(1),))]
    runner.add(c)
    for _ in range(100):
        if c.calls:
            break
        await asyncio.sleep(0.01)
    assert len(c.calls) == 1
    runner.remove("late")
    await runner.idle("late")
    assert runner.connectors() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_runs_are_counted_by_outcome_with_their_duration(store: DirectoryStore) -> None:
    def sample(name: str, outcome: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0

    before = {
        (name, outcome): sample(name, outcome)
        for name in ("wac_core_connector_runs_total", "wac_core_connector_run_duration_seconds_count")
        for outcome in ("succeeded", "failed")
    }
    c = Scripted()
    c.script = [FetchResult(full=True, records=(rec(1),), cursor={"n": 1}), FetchError("the server said no")]
    runner = SyncRunner(store, [c])
    await runner.run("t")
    await runner.run("t")
    for name in ("wac_core_connector_runs_total", "wac_core_connector_run_duration_seconds_count"):
        for outcome in ("succeeded", "failed"):
            assert sample(name, outcome) - before[name, outcome] == 1, (name, outcome)
