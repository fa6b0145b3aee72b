"""Garbage collection for the long-running servers (core and edge).

CPython's full collection walks every tracked object. With 5,000 sockets
the edge and the core hold around a million, and a full collection stops
the process for 0.3-0.5 s, mostly finding nothing: measured during a
fan-out of one event to 5,000 sockets, it doubled the p99 delivery time.

So the objects that have lived through a while are frozen (moved to the
permanent generation, which automatic collections skip): the automatic
collections then only walk what is new. Frozen objects are still freed by
reference counting; only garbage *cycles* among them wait, until the next
thaw, when a full collection runs once and everything is frozen again.
Both steps run from a task, at a fixed pace, never in the middle of a
burst of work started by a request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("wac.gc")

FREEZE_SECONDS = 30.0  # survivors older than this leave the automatic collections
THAW_EVERY = 20  # every so many freezes (10 minutes), a full collection first


async def tend(freeze_seconds: float = FREEZE_SECONDS, thaw_every: int = THAW_EVERY) -> None:
    """Run until cancelled: freeze the survivors periodically, thaw and
    collect everything now and then."""
    rounds = 0
    while True:
        await asyncio.sleep(freeze_seconds)
        rounds += 1
        if rounds % thaw_every == 0:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.debug("full collection", extra={"ms": round((time.perf_counter() - started) * 1e3), "found": found})
        else:
            # What survived a collection of the young generations only.
            gc.collect(1)
        gc.freeze()
