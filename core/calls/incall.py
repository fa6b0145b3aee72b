"""Who is in a call: the answered calls of each subscriber, whichever path
carried them (the WAPI's call machine or the SIP gateway), the conference
rooms it is in (``joined``/``left``), and the worker that tells presence
when a subscriber's in-call state changes.

Presence hears each change off the calls' own path (a call's events must not
wait for presence to fan out), one subscriber at a time and coalesced: a
subscriber whose state flips twice before the worker reaches it is told
only its latest state, and never the same state twice in a row.

In a cluster (``shared``) a subscriber's calls may be on several cores: each
core adds its calls to the cluster's set (``core/cluster/call_sets.py``) and
presence is told "in a call" when the set gains its first call and "not in
a call" when it loses its last, by whichever core made the change. Those
changes are told in order, not coalesced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from core.cluster.call_sets import CallSets
from core.tasks import cancelled

log = logging.getLogger("wac.calls")

CallStateListener = Callable[[str, bool], Awaitable[None]]
"""(username, in_call): the subscriber's in-call state changed."""


class InCall:
    """username -> the ids of its answered (ACTIVE) calls. Parties that are
    not subscribers (a tel: or sip: URI) are never added."""

    def __init__(self, listener: CallStateListener | None = None, shared: CallSets | None = None) -> None:
        self._listener = listener
        self._shared = shared
        # In a cluster: (call id, username, joined) to apply to the shared set.
        self._changes: asyncio.Queue[tuple[str, str, bool]] = asyncio.Queue()
        self._active: dict[str, set[str]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._wanted: dict[str, bool] = {}
        self._told: set[str] = set()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is not None:
            return
        if self._shared is not None:
            self._worker = asyncio.create_task(self._share(self._shared), name="calls-in-call-state")
        elif self._listener is not None:
            self._worker = asyncio.create_task(self._tell(self._listener), name="calls-in-call-state")

    async def stop(self) -> None:
        """Tell what is queued (for a moment), then stop the worker."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
            await asyncio.wait_for(self._changes.join(), 2.0)
        await cancelled(self._worker)
        self._worker = None

    def busy(self, username: str) -> bool:
        """Whether the subscriber has an answered call now."""
        return bool(self._active.get(username))

    async def busy_anywhere(self, username: str) -> bool:
        """Whether the subscriber has an answered call on any core."""
        if self._shared is None:
            return self.busy(username)
        return await self._shared.busy(username)

    def users(self) -> tuple[str, ...]:
        return tuple(self._active)

    def add(self, call_id: str, *usernames: str) -> None:
        """The call is answered: its parties are in a call."""
        for username in usernames:
            calls = self._active.setdefault(username, set())
            if not calls:
                self._want(username, True)
            if self._shared is not None and call_id not in calls:
                self._changes.put_nowait((call_id, username, True))
            calls.add(call_id)

    def remove(self, call_id: str, *usernames: str) -> None:
        """The call ended: its parties leave it, and their in-call state when
        it was their last."""
        for username in usernames:
            calls = self._active.get(username)
            if calls is None or call_id not in calls:
                continue
            calls.discard(call_id)
            if self._shared is not None:
                self._changes.put_nowait((call_id, username, False))
            if not calls:
                del self._active[username]
                self._want(username, False)

    def forget(self, call_id: str, *usernames: str) -> None:
        """This core no longer holds the call, which goes on elsewhere: it
        leaves this core's view, and nobody is told."""
        for username in usernames:
            calls = self._active.get(username)
            if calls is not None and call_id in calls:
                calls.discard(call_id)
                if not calls:
                    del self._active[username]

    def joined(self, room: str, username: str) -> None:
        """The subscriber entered a room whose membership lives in the
        database (a conference's), where any core may see it leave: in a
        cluster the change goes to the cluster's set alone, which every core
        changes alike (add() would also keep it in this core's memory, which
        the core that sees it leave could not clear); embedded, as add().
        Idempotent."""
        if self._shared is None:
            self.add(room, username)
        else:
            self._changes.put_nowait((room, username, True))

    def left(self, room: str, username: str) -> None:
        """The subscriber left a room entered with joined(), told by any core."""
        if self._shared is None:
            self.remove(room, username)
        else:
            self._changes.put_nowait((room, username, False))

    def tell_all(self) -> None:
        """Tell presence every subscriber in a call (after a restart)."""
        for username in self._active:
            self._want(username, True)

    def _want(self, username: str, in_call: bool) -> None:
        if self._listener is None or self._shared is not None:
            return
        if username not in self._wanted:
            self._queue.put_nowait(username)
        self._wanted[username] = in_call

    async def _tell(self, listener: CallStateListener) -> None:
        while True:
            username = await self._queue.get()
            in_call = self._wanted.pop(username)
            try:
                if in_call != (username in self._told):
                    await listener(username, in_call)
                    if in_call:
                        self._told.add(username)
                    else:
                        self._told.discard(username)
            except Exception:
                log.exception("in-call state listener failed for %s", username)
            finally:
                self._queue.task_done()

    async def _share(self, shared: CallSets) -> None:
        while True:
            call_id, username, joined = await self._changes.get()
            try:
                if joined:
                    changed = await shared.join(call_id, username)
                else:
                    changed = await shared.leave(call_id, username)
                if changed and self._listener is not None:
                    await self._listener(username, joined)
            except Exception:
                log.exception("in-call state of %s: the cluster's set or its listener failed", username)
            finally:
                self._changes.task_done()
