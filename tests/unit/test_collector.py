"""settings.collector: survivors leave the automatic collections; a thaw round
collects garbage cycles among them."""

from __future__ import annotations

import asyncio
import gc
import weakref

from settings.collector import tend


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


async def test_survivors_are_frozen_and_a_thaw_collects_frozen_cycles() -> None:
    gc.unfreeze()
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector can free it
    alive = weakref.ref(a)
    task = asyncio.create_task(tend(freeze_seconds=0.05, thaw_every=4))
    try:
        await asyncio.sleep(0.08)  # one freeze round
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()  # automatic-style collection: frozen objects are skipped
        assert alive() is not None
        await asyncio.sleep(0.2)  # past the fourth round: thawed, collected, frozen again
        assert alive() is None
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()
        gc.unfreeze()
