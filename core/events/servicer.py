"""EventsService: a session's events as a server stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from core import errors
from core.auth.principal import subscriber
from core.events.devices import DeviceRegistry
from core.events.log import EventLog, EventsExpired
from wac.v1 import events_pb2, events_pb2_grpc

# A waiting stream wakes this often even with nothing to send, so that a
# session closed elsewhere or a cancelled call is noticed promptly.
WAKE_SECONDS = 15.0


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, events: EventLog, devices: DeviceRegistry) -> None:
        self._events = events
        self._devices = devices

    async def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.Event]:
        principal = subscriber()
        if request.after_seq < 0:
            raise errors.invalid("after_seq", "must not be negative")
        session = principal.session_id
        await self._events.open(session, principal.username)
        after = request.after_seq
        try:
            pending = await self._events.read(session, after)
        except EventsExpired as exc:
            raise errors.ApiError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"{exc}; reload your state and subscribe again with after_seq 0",
                reason="EVENTS_EXPIRED",
            ) from None
        await self._devices.stream_opened(principal.username, session)
        try:
            while True:
                for event in pending:
                    yield event
                    after = event.seq
                if not pending and not await self._events.is_open(session):
                    # Closed: deliver whatever was appended up to the close
                    # (the final sessionRevoked), then end.
                    pending = await self._events.read(session, after)
                    if not pending:
                        return
                    continue
                try:
                    pending = await self._events.wait(session, after, WAKE_SECONDS)
                except EventsExpired as exc:
                    # The reader fell so far behind that its next events were
                    # dropped: end the stream with the reason in-band.
                    raise errors.ApiError(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"{exc}; reload your state and subscribe again with after_seq 0",
                        reason="EVENTS_EXPIRED",
                    ) from None
        finally:
            await self._devices.stream_closed(principal.username, session)
