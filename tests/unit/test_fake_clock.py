"""The fake clock fires timers in due order as time is advanced, and never on its own."""

from __future__ import annotations

import asyncio

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
