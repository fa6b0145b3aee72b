"""Running connectors: one run at a time per connector, each one recorded,
and a schedule that the core starts.

A run reads the connector's cursor, fetches, and writes the result with the
next cursor in one transaction. A fetch or a write that fails is recorded
as a FAILED run and changes nothing.

In a cluster every core runs the schedule, and a run of connector X
happens only on the node holding the lease ``connector:X`` (``RunLeases``),
kept for the run's duration: one run of a connector in the whole cluster.
A run left RUNNING while nobody holds its lease was interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from core import metrics
from core.cluster.leases import Keeper, Lease, Leases
from core.directory import schedule
from core.directory.connector import Connector, FetchError, FetchResult, PermanentFetchError
from core.directory.records import Checkpoint, Counts, RunState, SyncRunRecord
from core.directory.store import DirectoryStore
from core.failures import Aborted, NotFound

log = logging.getLogger("wac.connectors")


class AlreadyRunning(Aborted):
    """A run of the connector is under way (on ``node``, in a cluster);
    SyncConnector answers ABORTED."""

    def __init__(self, name: str, node: str | None = None) -> None:
        where = f" on node {node}" if node else ""
        super().__init__(f"connector {name} is already running{where}")
        self.name = name
        self.node = node


class _NotDue(Exception):
    """A scheduled run found that another node ran the connector lately."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"not due for {wait:g} s")
        self.wait = wait


# The leases of connectors' runs are named RUN_LEASES + the connector's name.
RUN_LEASES = "connector:"


class RunLeases:
    """A cluster's leases on connectors' runs, kept by the node's Keeper
    while the run lasts."""

    def __init__(self, keeper: Keeper, leases: Leases, *, ttl: float) -> None:
        self._keeper = keeper
        self._leases = leases
        self._ttl = ttl

    async def take(self, connector: str) -> bool:
        """Whether this node now holds the connector's lease."""
        return await self._keeper.acquire(RUN_LEASES + connector, self._ttl) is not None

    async def holder(self, connector: str) -> str | None:
        return await self._leases.owner(RUN_LEASES + connector)

    async def give_up(self, connector: str) -> None:
        await self._keeper.release(RUN_LEASES + connector)


class UnknownConnector(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no connector named {name}")
        self.name = name


FailureHook = Callable[[Connector, Exception], Awaitable[None]]
"""Told of each failed run, e.g. to tell a subscriber their Google link broke."""


class SyncRunner:
    """Runs connectors on demand and on their schedules."""

    def __init__(
        self,
        store: DirectoryStore,
        connectors: Iterable[Connector] = (),
        *,
        on_failure: FailureHook | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        leases: RunLeases | None = None,
    ) -> None:
        """``leases``: a cluster's, so that each run holds its connector's
        lease; None on an embedded core (the only one)."""
        self._store = store
        self._leases = leases
        # The task of each run under way: a run whose lease is lost stops.
        self._running: dict[str, asyncio.Task[object]] = {}
        self._on_failure = on_failure
        # One clock for deciding and recording, or a full run could be
        # judged due by one and recorded by the other; ``sleep`` waits on
        # the same clock (the core's, which tests replace).
        self._clock = store.clock
        self._sleep = sleep
        self._connectors: dict[str, Connector] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._scheduling = False
        for connector in connectors:
            self.add(connector)

    def add(self, connector: Connector) -> None:
        """Register a connector (replacing one of the same name); scheduled
        at once if the schedule is running."""
        self.remove(connector.name)
        self._connectors[connector.name] = connector
        self._locks.setdefault(connector.name, asyncio.Lock())
        if self._scheduling:
            self._start_loop(connector)

    def remove(self, name: str) -> None:
        """Stop scheduling a connector and forget it. A scheduled run under
        way is cancelled (and recorded FAILED); one asked for by a caller
        finishes."""
        self._connectors.pop(name, None)
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.cancel()
            # Kept until it has unwound, so that stopping the schedule waits
            # for it too instead of leaving it mid-write on a closing store.
            self._retired.add(loop)
            loop.add_done_callback(self._retired.discard)

    async def idle(self, name: str) -> None:
        """Wait until no run of the connector is under way: after ``remove``,
        a run asked for by a caller finishes and a scheduled one unwinds, and
        no new one can start. Call it before removing the connector's entries,
        or a run that was writing them could bring them back."""
        lock = self._locks.get(name)
        if lock is not None:
            async with lock:
                pass

    def connectors(self) -> list[Connector]:
        return sorted(self._connectors.values(), key=lambda c: c.name)

    def get(self, name: str) -> Connector:
        try:
            return self._connectors[name]
        except KeyError:
            raise UnknownConnector(name) from None

    def is_running(self, name: str) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    async def run(self, name: str, full: bool = False) -> SyncRunRecord:
        """Run a connector now and return the finished run, SUCCEEDED or FAILED.

        Raises ``UnknownConnector``, or ``AlreadyRunning`` (ABORTED) if a run
        of it is under way: a second run would only repeat the first.
        """
        run, _ = await self._run(name, full)
        return run

    async def fail_interrupted_runs(self) -> int:
        """Mark the runs that stopped with their process FAILED; call at
        start-up, before the schedule. In a cluster only those whose
        connector's lease nobody holds: another node may be running one."""
        if self._leases is None:
            return await self._store.fail_interrupted_runs()
        failed = 0
        for name in await self._store.running_connectors():
            if await self._leases.take(name):
                try:
                    failed += await self._store.fail_interrupted_runs(name)
                finally:
                    await self._leases.give_up(name)
        return failed

    def lease_lost(self, lease: Lease) -> None:
        """The Keeper lost a run's lease: another node may run the
        connector now, so this run stops (and stays RUNNING until the next
        holder of the lease marks it failed)."""
        name = lease.name.removeprefix(RUN_LEASES)
        task = self._running.get(name)
        if task is not None:
            log.warning("sync of %s stops: its lease was lost", name)
            task.cancel()

    async def _run(self, name: str, full: bool, every: float | None = None) -> tuple[SyncRunRecord, Exception | None]:
        """``every``: the schedule's interval, for a scheduled run."""
        connector = self.get(name)
        lock = self._locks[name]
        if lock.locked():
            raise AlreadyRunning(name)
        async with lock:
            if self._leases is None:
                return await self._sync(connector, full)
            if not await self._leases.take(name):
                raise AlreadyRunning(name, await self._leases.holder(name))
            task = asyncio.current_task()
            if task is not None:
                self._running[name] = task
            try:
                # Nobody else holds the lease: a run still RUNNING stopped.
                await self._store.fail_interrupted_runs(name)
                if every is not None:
                    self._check_due(await self._store.last_run(name), every)
                return await self._sync(connector, full)
            finally:
                self._running.pop(name, None)
                await self._leases.give_up(name)

    def _check_due(self, last: SyncRunRecord | None, every: float) -> None:
        """Every node runs the schedule: a scheduled run waits for its
        interval after the last good run, whichever node ran it."""
        if last is None or last.state is not RunState.SUCCEEDED:
            return
        wait = schedule.first_delay(last_run=last, now=self._clock(), interval=every)
        if wait > 0:
            raise _NotDue(wait)

    async def _sync(self, connector: Connector, full: bool) -> tuple[SyncRunRecord, Exception | None]:
        name = connector.name
        state = await self._store.connector_state(name)
        full = schedule.wants_full(
            requested=full,
            state=state,
            now=self._clock(),
            full_every=connector.schedule.full_every,
        )
        run = await self._store.start_run(name, full=full)
        started = time.perf_counter()
        try:
            result = await connector.fetch(state.cursor, full)
            counts = await self._write(connector, result)
        # The run has to be recorded whatever went wrong: anything but
        # cancellation becomes a FAILED run.
        except Exception as exc:
            error = _describe(exc)
            if isinstance(exc, FetchError):
                log.warning("sync of %s failed: %s", name, error)
            else:
                log.exception("sync of %s failed unexpectedly", name)
            failed = await self._store.finish_run(run.run_id, state=RunState.FAILED, error=error)
            metrics.connector_run("failed", time.perf_counter() - started)
            if self._on_failure is not None:
                await self._report(connector, exc)
            return failed, exc
        # A cancelled run (the core stopping) stays RUNNING here: writing
        # from a cancelled task can outlive the database it writes to,
        # and the next start marks it failed (fail_interrupted_runs).
        done = await self._store.finish_run(
            run.run_id,
            state=RunState.SUCCEEDED,
            counts=counts,
            skipped=result.skipped,
            full=result.full,
        )
        metrics.connector_run("succeeded", time.perf_counter() - started)
        log.info(
            "sync of %s: %s, +%d ~%d -%d, %d skipped",
            name,
            "full" if result.full else "incremental",
            counts.added,
            counts.updated,
            counts.removed,
            result.skipped,
        )
        return done, None

    async def _write(self, connector: Connector, result: FetchResult) -> Counts:
        checkpoint = Checkpoint(connector.name, result.cursor, full=result.full)
        if result.full:
            return await self._store.replace_source(connector.source, result.records, checkpoint=checkpoint)
        return await self._store.apply_changes(
            connector.source, result.records, result.deleted_ids, checkpoint=checkpoint
        )

    async def _report(self, connector: Connector, exc: Exception) -> None:
        assert self._on_failure is not None
        try:
            await self._on_failure(connector, exc)
        except Exception:
            log.exception("failure hook for %s failed", connector.name)

    # -- the schedule ---------------------------------------------------------

    async def run_forever(self) -> None:
        """Run every connector on its schedule until cancelled. Connectors
        added meanwhile join the schedule; removed ones leave it."""
        if self._scheduling:
            raise RuntimeError("the schedule is already running")
        self._scheduling = True
        try:
            for connector in list(self._connectors.values()):
                self._start_loop(connector)
            await asyncio.Event().wait()
        finally:
            self._scheduling = False
            loops = [*self._loops.values(), *self._retired]
            self._loops.clear()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def _start_loop(self, connector: Connector) -> None:
        self._loops[connector.name] = asyncio.create_task(self._loop(connector), name=f"connector {connector.name}")

    async def _loop(self, connector: Connector) -> None:
        name, interval = connector.name, connector.schedule.interval
        last = await self._store.last_run(name)
        delay = schedule.first_delay(last_run=last, now=self._clock(), interval=interval)
        failures = 0
        while True:
            await self._sleep(delay)
            try:
                run, error = await self._run(name, full=False, every=interval)
            except _NotDue as not_due:
                delay = not_due.wait  # another node ran it: its interval counts
                continue
            except AlreadyRunning:
                delay = interval  # someone asked for a run just now; that one counts
                continue
            except UnknownConnector:
                return
            except Exception:
                # The store itself failed (the database is down): try again later.
                log.exception("scheduled sync of %s could not run", name)
                failures += 1
                delay = schedule.retry_delay(failures=failures, interval=interval)
                continue
            if run.state is RunState.SUCCEEDED:
                failures, delay = 0, interval
            elif isinstance(error, PermanentFetchError):
                log.warning("%s leaves the schedule until it is set up again", name)
                self._loops.pop(name, None)
                return
            else:
                failures += 1
                delay = schedule.retry_delay(failures=failures, interval=interval)


def _describe(exc: Exception) -> str:
    if isinstance(exc, FetchError):
        return str(exc)
    # Unexpected errors are our bugs or the database's; their text names no
    # secret (fetch errors from libraries are wrapped as FetchError first).
    return f"{type(exc).__name__}: {exc}"
