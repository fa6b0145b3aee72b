"""The fake clock fires timers in due order as time is advanced, and never on its own."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.clock import EPOCH, FakeClock


async def test_timers_fire_in_due_order_only_when_time_is_advanced() -> None:
    clock = FakeClock()
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.time())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.time())))
    cancelled = clock.call_later(1.5, lambda: fired.append(("x", clock.time())))
    cancelled.cancel()
    await asyncio.sleep(0.01)
    assert fired == []
    await clock.advance(1.9)
    assert fired == [("a", EPOCH + 1.0)]
    assert clock.time() == EPOCH + 1.9 and clock.pending() == 1
    await clock.advance(0.1)
    assert fired == [("a", EPOCH + 1.0), ("b", EPOCH + 2.0)]


async def test_sleep_waits_for_fake_time() -> None:
    clock = FakeClock()
    woke = asyncio.create_task(clock.sleep(30))
    await clock.advance(29)
    assert not woke.done()
    await clock.advance(1)
    assert woke.done()


async def test_timers_started_by_a_timer_fire_within_the_same_advance() -> None:
    clock = FakeClock()
    fired: list[float] = []

    def tick() -> None:
        fired.append(clock.time())
        if len(fired) < 3:
            clock.call_later(1.0, tick)

    clock.call_later(1.0, tick)
    await clock.advance(10)
    assert fired == [EPOCH + 1.0, EPOCH + 2.0, EPOCH + 3.0]
    assert clock.time() == EPOCH + 10 and clock.monotonic() == 10


async def test_a_deadline_reached_in_small_steps_is_due_despite_rounding() -> None:
    clock = FakeClock()
    fired: list[float] = []
    clock.call_later(60.0, lambda: fired.append(clock.time()))
    for _ in range(999):
        await clock.advance(0.06)
    assert fired == []
    await clock.advance(0.06)
    assert fired == [EPOCH + 60.0]


async def test_time_does_not_go_back() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        await clock.advance(-1)


async def test_a_cancelled_sleep_leaves_no_timer() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(30))
    await clock.advance(1)
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    assert clock.pending() == 0
