"""What the cluster's background loops share."""

from __future__ import annotations

import asyncio


def stopping() -> bool:
    """Whether the running task is being cancelled. A loop that logs an
    error and goes on must ask first: a read cancelled inside redis-py can
    come out as one of its own errors (a timeout), and a loop that took it
    for a failed beat would outlive its core's stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def end_if_stopping() -> None:
    """Raise CancelledError if the running task is being cancelled: called
    at the top of each round of a loop, for a cancellation that redis-py
    swallowed (8.1 may, in a blocking read) instead of raising."""
    if stopping():
        raise asyncio.CancelledError
