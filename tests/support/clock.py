"""A fake clock (core/clock.py's Clock) that tests move by hand.

``advance(seconds)`` moves time forward and runs every timer that falls due
on the way, in order of its due time, letting the event loop run the work
each one starts; ``sleep()`` waits for fake time, not real time. So a test
says "60 s later the call ends NO_ANSWER", and "nothing else arrives" is
proved by advancing past every deadline, not by waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

EPOCH = 1_800_000_000.0
# Fake intervals add up with rounding: a timer due within this of the end of
# an advance is due at that end. Time is kept as seconds since the start,
# where a float's step is tiny (at 1.8e9 it is 2.4e-7).
ROUNDING = 1e-6


class FakeTimer:
    def __init__(self, due: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.due = due  # seconds since the clock's start
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, start: float = EPOCH) -> None:
        self._start = start
        self._elapsed = 0.0
        self._order = itertools.count()
        self._timers: list[tuple[float, int, FakeTimer]] = []

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self._elapsed + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay, _wake, done)
        try:
            await done
        finally:
            timer.cancel()  # a cancelled sleeper leaves no timer behind

    def pending(self) -> int:
        """Timers not yet due and not cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def delays(self) -> list[float]:
        """How far ahead each timer not yet due (nor cancelled) is, soonest
        first: a test waits for the one a real server's request arms."""
        return sorted(due - self._elapsed for due, _, t in self._timers if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward by seconds, firing each timer at its due time
        (those that the callbacks start on the way too)."""
        if seconds < 0:
            raise ValueError("fake time does not go back")
        end = self._elapsed + seconds
        await settle()
        while self._timers and self._timers[0][0] <= end + ROUNDING:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._elapsed = max(self._elapsed, due)
            timer.callback(*timer.args)
            await settle()
        self._elapsed = max(self._elapsed, end)
        await settle()


def _wake(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def settle(rounds: int = 20) -> None:
    """Let the event loop run what is ready (tasks started by a timer, and
    the tasks they start), without letting real time matter."""
    for _ in range(rounds):
        await asyncio.sleep(0)
