"""The per-session event log: the interface every implementation keeps.

Each session has its own log; an event published to a subscriber is appended
to the log of each of its open sessions with that session's next ``seq``. A
reader resumes from the last seq it saw. Seqs grow by one per event; where a
session's start is the implementation's: the embedded log starts at 1, the
cluster's above any seq a lost Redis may have issued, so no reader ever
takes a new event for one it missed. The embedded implementation keeps logs
in memory (``memory.py``); the cluster's keeps them on Redis
(``redis_log.py``), where every core reads and writes them, behind the same
interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from wac.v1 import events_pb2


class EventsExpired(Exception):
    """The events after the requested seq are no longer kept."""


# Takes a session's next event as it is appended: its seq, and the event
# stamped with its time but not its seq, shared by every session it was
# appended to (not to be changed). Returns whether it took it.
Listener = Callable[[int, events_pb2.Event], bool]


class Listening(Protocol):
    """A listener handed a session's events as they are appended."""

    @property
    def last(self) -> int:
        """The seq of the last event the listener took."""

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done once no more events are handed: the listener refused one,
        the session was closed, this node may have missed one (a gap), the
        log stopped, or the listen's timeout passed. The events after
        ``last`` are then read or waited for as usual."""

    def cancel(self) -> None:
        """Stop handing events (idempotent)."""


class EventLog(Protocol):
    async def open(self, session_id: str, username: str) -> None:
        """Start keeping events for a session (idempotent)."""

    async def close(self, session_id: str, final: events_pb2.Event | None = None) -> None:
        """Stop routing new events to the session, after appending ``final``.

        The session's events stay readable for the retention window, so a
        client can still read why it was closed.
        """

    async def publish(
        self,
        usernames: Iterable[str],
        event: events_pb2.Event,
        exclude_session: str | None = None,
    ) -> None:
        """Append the event to every open session of these subscribers, but
        ``exclude_session`` (the device that caused the event knows already)."""

    async def publish_to_sessions(self, session_ids: Iterable[str], event: events_pb2.Event) -> None:
        """Append the event to these sessions' logs only."""

    async def read(self, session_id: str, after_seq: int, limit: int = 500) -> list[events_pb2.Event]:
        """The events after ``after_seq``, oldest first.

        Raises EventsExpired when some of them are gone (past the retention
        window, or the log does not know the seq at all).
        """

    async def wait(self, session_id: str, after_seq: int, timeout: float, limit: int = 500) -> list[events_pb2.Event]:
        """Like read, but waits up to ``timeout`` seconds for the first event."""

    async def is_open(self, session_id: str) -> bool:
        """Whether the session still receives new events."""

    def listen(self, session_id: str, after_seq: int, listener: Listener, timeout: float) -> Listening | None:
        """Hand the session's events after ``after_seq`` to ``listener`` as
        they are appended, in seq order with no gap, until ``timeout``
        seconds pass or ``Listening.ended`` for another reason. None when
        the log cannot tell that ``after_seq`` is the last seq issued (the
        caller waits instead, which reads).

        What a fan-out costs per session: a call at append time, instead
        of a reader's task woken for each event to read it.
        """
