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


class FakeTimer:
    def __init__(self, due: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.due = due
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        self._start = start
        self._order = itertools.count()
        self._timers: list[tuple[float, int, FakeTimer]] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self.call_later(delay, lambda: done.done() or done.set_result(None))
        await done

    def pending(self) -> int:
        """Timers not yet due and not cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward by seconds, firing each timer at its due time."""
        end = self._now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= end:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, due)
            timer.callback(*timer.args)
            await settle()
        self._now = end
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let the event loop run what is ready (tasks started by a timer, and
    the tasks they start), without letting real time matter."""
    for _ in range(rounds):
        await asyncio.sleep(0)
