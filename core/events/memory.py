"""The embedded event log: in memory, bounded in time and in count.

Bounds: events older than ``retention`` seconds and beyond
``max_events`` per session are dropped; a reader that needs them gets
EventsExpired and reloads its state. Logs of sessions that nobody has read
for longer than the retention window are dropped whole.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from core import metrics
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.events.log import EventsExpired, Listener
from wac.v1 import events_pb2


@dataclass(slots=True)
class _SessionLog:
    username: str
    open: bool = True
    next_seq: int = 1
    # (seq, time, shared event stamped with its time, without seq)
    events: deque[tuple[int, float, events_pb2.Event]] = field(default_factory=deque)
    # Futures of readers waiting for the next event. A bare future with a
    # timer handle is much cheaper than asyncio.wait_for, which makes a task
    # per wake-up; with thousands of idle streams that is most of the cost.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    listeners: list[_Listening] = field(default_factory=list)
    readers: int = 0
    last_read: float = 0.0


class MemoryEventLog:
    def __init__(
        self,
        *,
        retention: float = 120.0,
        max_events: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._retention = retention
        self._max_events = max_events
        self._clock = clock
        self._logs: dict[str, _SessionLog] = {}
        self._by_user: dict[str, set[str]] = {}
        self._timeouts = _Timeouts(clock)

    def retained(self) -> int:
        """Events kept now, every session's: a metric read at scrape time on
        the metrics listener's thread (the copy is atomic under the GIL)."""
        return sum(len(log.events) for log in list(self._logs.values()))

    async def open(self, session_id: str, username: str) -> None:
        log = self._logs.get(session_id)
        if log is None:
            self._logs[session_id] = _SessionLog(username=username, last_read=self._clock.time())
            self._by_user.setdefault(username, set()).add(session_id)

    async def close(self, session_id: str, final: events_pb2.Event | None = None) -> None:
        log = self._logs.get(session_id)
        if log is None or not log.open:
            return
        if final is not None:
            now = self._clock.time()
            self._append(log, _stamped(final, now), now)
        log.open = False
        self._unroute(session_id, log.username)
        waiters, log.waiters = log.waiters, []
        for waiter in waiters:
            _wake(waiter)
        listeners, log.listeners = log.listeners, []
        for listening in listeners:
            listening.end()

    async def publish(
        self,
        usernames: Iterable[str],
        event: events_pb2.Event,
        exclude_session: str | None = None,
    ) -> None:
        metrics.EVENTS_PUBLISHED.inc()
        now = self._clock.time()
        stamped = _stamped(event, now)
        for username in usernames:
            for session_id in tuple(self._by_user.get(username, ())):
                if session_id != exclude_session:
                    self._append(self._logs[session_id], stamped, now)

    async def publish_to_sessions(self, session_ids: Iterable[str], event: events_pb2.Event) -> None:
        metrics.EVENTS_PUBLISHED.inc()
        now = self._clock.time()
        stamped = _stamped(event, now)
        for session_id in session_ids:
            log = self._logs.get(session_id)
            if log is not None and log.open:
                self._append(log, stamped, now)

    async def read(self, session_id: str, after_seq: int, limit: int = 500) -> list[events_pb2.Event]:
        log = self._logs.get(session_id)
        now = self._clock.time()
        if log is None:
            if after_seq > 0:
                raise EventsExpired(f"no events are kept for this session after seq {after_seq}")
            return []
        log.last_read = now
        self._prune(log, now)
        if after_seq >= log.next_seq:
            raise EventsExpired(f"seq {after_seq} was never issued to this session (last is {log.next_seq - 1})")
        first = log.events[0][0] if log.events else log.next_seq
        if after_seq + 1 < first and after_seq != 0:
            raise EventsExpired(f"events after seq {after_seq} are no longer kept (oldest kept is {first})")
        out: list[events_pb2.Event] = []
        start = max(0, after_seq + 1 - first)
        for index in range(start, min(len(log.events), start + limit)):
            seq, _, shared = log.events[index]
            event = events_pb2.Event()
            event.CopyFrom(shared)
            event.seq = seq
            out.append(event)
        return out

    async def wait(self, session_id: str, after_seq: int, timeout: float, limit: int = 500) -> list[events_pb2.Event]:
        deadline = self._clock.time() + timeout
        while True:
            events = await self.read(session_id, after_seq, limit)
            log = self._logs.get(session_id)
            if events or log is None or not log.open:
                return events
            remaining = deadline - self._clock.time()
            if remaining <= 0:
                return []
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._timeouts.add(deadline, waiter)
            log.waiters.append(waiter)
            log.readers += 1
            try:
                await waiter
            finally:
                self._timeouts.discard()
                log.readers -= 1
                if not waiter.done():
                    waiter.cancel()
                if waiter in log.waiters:
                    log.waiters.remove(waiter)

    async def is_open(self, session_id: str) -> bool:
        log = self._logs.get(session_id)
        return log is not None and log.open

    def listen(self, session_id: str, after_seq: int, listener: Listener, timeout: float) -> _Listening | None:
        log = self._logs.get(session_id)
        if log is None or not log.open or after_seq != log.next_seq - 1:
            return None
        listening = _Listening(self, log, listener, after_seq)
        log.listeners.append(listening)
        log.readers += 1
        log.last_read = self._clock.time()
        self._timeouts.add(log.last_read + timeout, listening.ended)
        return listening

    def sweep(self) -> None:
        """Drop the logs of sessions nobody read for a whole retention window."""
        now = self._clock.time()
        for session_id, log in tuple(self._logs.items()):
            if log.readers == 0 and now - log.last_read > self._retention:
                del self._logs[session_id]
                self._unroute(session_id, log.username)

    def _append(self, log: _SessionLog, event: events_pb2.Event, now: float) -> None:
        seq = log.next_seq
        events = log.events
        events.append((seq, now, event))
        log.next_seq = seq + 1
        if len(events) > self._max_events:
            events.popleft()
        elif events[0][1] < now - self._retention:
            # A listened log is not read: its old events go here.
            self._prune(log, now)
        if log.waiters:
            waiters, log.waiters = log.waiters, []
            for waiter in waiters:
                _wake(waiter)
        if log.listeners:
            for listening in tuple(log.listeners):
                if listening.listener(seq, event):
                    listening.last = seq
                else:
                    listening.end()

    def _prune(self, log: _SessionLog, now: float) -> None:
        horizon = now - self._retention
        while log.events and log.events[0][1] < horizon:
            log.events.popleft()

    def _unroute(self, session_id: str, username: str) -> None:
        sessions = self._by_user.get(username)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._by_user[username]


class _Listening:
    """A listener of one session's log (``EventLog.listen``)."""

    __slots__ = ("_events", "_log", "ended", "last", "listener")

    def __init__(self, events: MemoryEventLog, log: _SessionLog, listener: Listener, last: int) -> None:
        self._events = events
        self._log: _SessionLog | None = log
        self.listener = listener
        self.last = last
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(self) -> None:
        _wake(self.ended)
        self.cancel()

    def cancel(self) -> None:
        log, self._log = self._log, None
        if log is None:
            return
        if self in log.listeners:
            log.listeners.remove(self)
        log.readers -= 1
        log.last_read = self._events._clock.time()
        self._events._timeouts.discard()


def _stamped(event: events_pb2.Event, now: float) -> events_pb2.Event:
    """The event as every session's log shares it: its time set once per
    publish, not once per reader."""
    stamped = events_pb2.Event()
    stamped.CopyFrom(event)
    stamped.time.FromMicroseconds(round(now * 1e6))
    return stamped


class _Timeouts:
    """The waiters' timeouts on one timer, armed for the earliest.

    A timer per wait (call_later) was a fifth of the core's CPU in a fan-out
    to thousands of streams: each delivery re-arms its reader's wait. Here a
    wait costs an append (deadlines come mostly in order: every reader asks
    for the same timeout); a waiter woken by an event stays listed until its
    deadline passes, when waking it again does nothing.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # (deadline, order of arrival, waiter), ordered by deadline.
        self._due: deque[tuple[float, int, asyncio.Future[None]]] = deque()
        self._count = 0
        self._timer: Timer | None = None
        self._timer_at = math.inf
        # Past this length, the waiters already woken are dropped (bounded
        # by the live waits, whatever the rate of events).
        self._compact_at = 1024
        self._waiting = 0

    def add(self, deadline: float, waiter: asyncio.Future[None]) -> None:
        if len(self._due) >= self._compact_at:
            self._due = deque(entry for entry in self._due if not entry[2].done())
            self._compact_at = max(1024, 2 * len(self._due))
        self._count += 1
        self._waiting += 1
        entry = (deadline, self._count, waiter)
        if self._due and deadline < self._due[-1][0]:
            bisect.insort(self._due, entry)
        else:
            self._due.append(entry)
        if deadline < self._timer_at:
            self._arm(deadline)

    def discard(self) -> None:
        """A wait ended (woken, timed out or cancelled). Once none is left,
        nothing stays scheduled."""
        self._waiting -= 1
        if self._waiting == 0:
            self._due.clear()
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._clock.call_later(max(0.0, deadline - self._clock.time()), self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._clock.time()
        due = self._due
        while due and due[0][0] <= now:
            _wake(due.popleft()[2])
        if due:
            self._arm(due[0][0])


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
