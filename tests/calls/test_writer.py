"""Group commit: writes that queue up during a commit share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.calls.machine import CallInfo, CallState, Media
from core.calls.store import CallWrite
from core.calls.writer import GroupWriter


def write(call_id: str) -> CallWrite:
    call = CallInfo(
        call_id=call_id,
        caller="alice",
        caller_device="a1",
        callee="bob",
        state=CallState.RINGING,
        media=Media(),
        offered_devices=("b1",),
        callee_device=None,
        create_time=0.0,
        answer_time=None,
        end_time=None,
        end_reason=None,
        ended_by=None,
        end_detail="",
    )
    return CallWrite(call, None, new=True)


class SlowStore:
    """A store whose commits last until the test lets them end."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self.committing = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()

    async def write_batch(self, writes: Sequence[CallWrite]) -> None:
        self.batches.append([w.call.call_id for w in writes])
        self.committing.set()
        await self.released.wait()
        if self.fail:
            raise OSError("disk full")


async def test_writes_queued_during_a_commit_share_the_next() -> None:
    store = SlowStore()
    store.released.clear()
    writer = GroupWriter(store)
    first = asyncio.ensure_future(writer.write(write("c0")))
    await store.committing.wait()  # c0's commit is under way
    rest = [asyncio.ensure_future(writer.write(write(f"c{i}"))) for i in range(1, 6)]
    await asyncio.sleep(0)  # they are queued behind it
    assert not first.done()
    store.released.set()
    await asyncio.gather(first, *rest)
    assert store.batches == [["c0"], ["c1", "c2", "c3", "c4", "c5"]]


async def test_a_failed_batch_fails_each_of_its_writes() -> None:
    writer = GroupWriter(SlowStore(fail=True))
    results = await asyncio.gather(writer.write(write("a")), writer.write(write("b")), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    with pytest.raises(OSError, match="disk full"):
        await writer.write(write("c"))
