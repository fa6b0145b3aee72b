"""One session's events, from a seq on, until the session ends: what
EventsService.Subscribe streams to a client, and what each attachment of
the edge's shared stream (core/events/edge_stream.py) carries."""

from __future__ import annotations

from typing import Protocol

from core import failures
from core.auth.principal import SubscriberPrincipal
from core.cluster.devices import DeviceRegistry
from core.events.log import EventLog, EventsExpired
from wac.v1 import events_pb2

# A waiting stream wakes this often even with nothing to send, so that a
# session closed elsewhere or a cancelled call is noticed promptly.
WAKE_SECONDS = 15.0
# A listening stream is told of a close by the log itself (on Redis, by the
# notice of the close, or by ending every listener when notices may have
# been lost): it checks this often only in case one went astray. A
# re-listen is a wake, an is_open, a read and a new listen: every
# WAKE_SECONDS, 5,000 idle streams would make 333 a second.
LISTEN_SECONDS = 60.0


class Outbox(Protocol):
    """Where a session's events go out (a stream's queue). An event given
    is shared with other sessions: not to be changed; ``seq`` is its seq
    in this session."""

    def offer(self, seq: int, event: events_pb2.Event) -> bool:
        """Take the event if there is room now; False if not."""

    async def put(self, seq: int, event: events_pb2.Event) -> None:
        """Take the event, waiting for room."""


class EventsHandler:
    def __init__(self, events: EventLog, devices: DeviceRegistry) -> None:
        self._events = events
        self._devices = devices

    async def open(self, principal: SubscriberPrincipal, after_seq: int) -> list[events_pb2.Event]:
        """Validate and open the session's log; its first events. Raises the
        failure the stream is refused with."""
        if after_seq < 0:
            raise failures.Invalid("after_seq", "must not be negative")
        await self._events.open(principal.session_id, principal.username)
        try:
            return await self._events.read(principal.session_id, after_seq)
        except EventsExpired as exc:
            raise _expired(exc) from None

    async def follow(
        self, principal: SubscriberPrincipal, after: int, pending: list[events_pb2.Event], outbox: Outbox
    ) -> None:
        """Put the session's events from ``pending`` on into ``outbox``,
        until the session ends.

        While the outbox keeps up, the log hands it each event as it is
        appended (``EventLog.listen``) and this task sleeps; it wakes to
        read when the log cannot hand (a full outbox, a gap, a close), and
        every LISTEN_SECONDS.
        """
        session = principal.session_id
        # A stream that reaches here after its session ended (a Subscribe
        # authenticated just before a logout) delivers the final events but
        # must not bring the device back online for a grace period.
        online = await self._events.is_open(session)
        if online:
            await self._devices.stream_opened(principal.username, session)
        try:
            while True:
                for event in pending:
                    await outbox.put(event.seq, event)
                    after = event.seq
                if not pending and not await self._events.is_open(session):
                    # Closed: deliver whatever was appended up to the close
                    # (the final sessionRevoked), then end.
                    pending = await self._events.read(session, after)
                    if not pending:
                        return
                    continue
                try:
                    listening = self._events.listen(session, after, outbox.offer, LISTEN_SECONDS)
                    if listening is None:
                        pending = await self._events.wait(session, after, WAKE_SECONDS)
                        continue
                    try:
                        await listening.ended
                    finally:
                        listening.cancel()
                    after = listening.last
                    pending = await self._events.wait(session, after, 0)
                except EventsExpired as exc:
                    # The reader fell so far behind that its next events were
                    # dropped: end the stream with the reason in-band.
                    raise _expired(exc) from None
        finally:
            if online:
                await self._devices.stream_closed(principal.username, session)


def _expired(exc: EventsExpired) -> failures.OutOfRange:
    return failures.OutOfRange(
        f"{exc}; reload your state and subscribe again with after_seq 0", reason="EVENTS_EXPIRED"
    )
