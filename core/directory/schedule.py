"""When to run a connector and whether to read everything. Pure functions of
the recorded state and the current time."""

from __future__ import annotations

from core.directory.records import ConnectorState, SyncRunRecord

# After a failed run the next try comes sooner than the interval, doubling
# from this up to the interval, so a short outage costs minutes, not hours.
FIRST_RETRY = 30.0


def wants_full(*, requested: bool, state: ConnectorState, now: float, full_every: float | None) -> bool:
    """Whether the next run should read everything."""
    if requested or state.cursor is None:
        return True
    if full_every is None:
        return False
    return state.last_full_time is None or now - state.last_full_time >= full_every


def first_delay(*, last_run: SyncRunRecord | None, now: float, interval: float) -> float:
    """Seconds until a connector's first scheduled run after start-up: a
    restart does not re-run what ran a moment ago."""
    if last_run is None:
        return 0.0
    return min(interval, max(0.0, last_run.start_time + interval - now))


def retry_delay(*, failures: int, interval: float) -> float:
    """Seconds until the next try after ``failures`` failed runs in a row."""
    if failures <= 0:
        return interval
    return min(interval, FIRST_RETRY * 2 ** (failures - 1))
