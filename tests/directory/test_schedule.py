"""When a connector runs and whether it reads everything: the schedule's pure
rules, with the time given."""

from __future__ import annotations

from core.directory.records import ConnectorState, RunState, SyncRunRecord
from core.directory.schedule import first_delay, retry_delay, wants_full


def test_wants_full() -> None:
    state = ConnectorState(cursor={"x": 1}, last_full_time=1000.0)
    assert wants_full(requested=True, state=state, now=1001, full_every=None)
    assert wants_full(requested=False, state=ConnectorState(), now=1001, full_every=None)
    assert not wants_full(requested=False, state=state, now=1001, full_every=None)
    assert not wants_full(requested=False, state=state, now=1999, full_every=1000)
    assert wants_full(requested=False, state=state, now=2000, full_every=1000)
    assert wants_full(requested=False, state=state, now=1000, full_every=0)


def test_delays() -> None:
    run = SyncRunRecord(1, "c", RunState.SUCCEEDED, True, start_time=1000.0, end_time=1010.0)
    assert first_delay(last_run=None, now=5000, interval=900) == 0
    assert first_delay(last_run=run, now=1300, interval=900) == 600
    assert first_delay(last_run=run, now=9000, interval=900) == 0
    assert [retry_delay(failures=n, interval=900) for n in (0, 1, 2, 3, 6)] == [900, 30, 60, 120, 900]
