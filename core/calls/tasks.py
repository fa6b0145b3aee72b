"""Stopping the calls' background tasks."""

from __future__ import annotations

import asyncio


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
