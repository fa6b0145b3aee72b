"""EventsService: a session's events as a server stream (Subscribe).

The edge's shared stream of many sessions' events is not part of this
public service: see core/events/edge_stream.py (wac.internal.v1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from core.auth.principal import subscriber
from core.events.handler import EventsHandler
from wac.v1 import events_pb2, events_pb2_grpc


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, events: EventsHandler) -> None:
        self._events = events

    async def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.Event]:
        principal = subscriber()
        pending = await self._events.open(principal, request.after_seq)
        async for event in self._events.follow(principal, request.after_seq, pending):
            yield event
