"""The handlers' background tasks: changes that complete even when their
RPC is cancelled, drained at stop, and the cancelling of a loop task."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Work:
    """The tasks a handler runs on behalf of its RPCs and listeners."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``work`` as a task, shielded: a change completes (and is
        announced) even if the RPC that asked for it is cancelled."""
        return await asyncio.shield(self.spawn(work))

    async def drain(self, timeout: float = 5.0) -> None:
        """Let the tasks in flight finish for up to ``timeout`` seconds; cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Retrieved so that a refusal nobody awaits any more (its RPC was
        # cancelled) is not reported as an unhandled task error.
        if not task.cancelled():
            task.exception()


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it is done, cancelling it again until
    it is: a cancellation can be lost under it (on Python 3.11 an
    asyncio.wait_for that completes as it lands swallows it, and redis-py
    may turn one into its own timeout error, which a loop logs and survives)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled():
        task.exception()  # retrieved: a failure was logged where it happened
