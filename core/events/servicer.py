"""EventsService: a session's events as a server stream (Subscribe).

The edge's shared stream of many sessions' events is not part of this
public service: see core/events/edge_stream.py (wac.internal.v1).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import grpc

from core.auth.principal import subscriber
from core.events.handler import EventsHandler
from wac.v1 import events_pb2, events_pb2_grpc

# Events waiting for the client's stream: past this many, the session's
# follower waits (its events stay in the log).
OUTBOX = 64


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, events: EventsHandler) -> None:
        self._events = events

    async def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.Event]:
        principal = subscriber()
        pending = await self._events.open(principal, request.after_seq)
        outbox = _Outbox(OUTBOX)
        following = asyncio.create_task(
            self._events.follow(principal, request.after_seq, pending, outbox), name="events-subscribe"
        )
        following.add_done_callback(lambda _: outbox.close())
        try:
            while (item := await outbox.get()) is not None:
                seq, shared = item
                event = events_pb2.Event()
                event.CopyFrom(shared)
                event.seq = seq
                yield event
            following.result()  # how it ended: a failure is the stream's status
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


class _Outbox:
    """One Subscribe's events between its follower and its stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[tuple[int, events_pb2.Event]] = deque()
        self._closed = False
        # The stream waiting for an event, the follower waiting for room.
        self._ready: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def offer(self, seq: int, event: events_pb2.Event) -> bool:
        if len(self._items) >= self._limit:
            return False
        self._items.append((seq, event))
        _wake(self._ready)
        return True

    async def put(self, seq: int, event: events_pb2.Event) -> None:
        while len(self._items) >= self._limit:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self._items.append((seq, event))
        _wake(self._ready)

    def close(self) -> None:
        self._closed = True
        _wake(self._ready)

    async def get(self) -> tuple[int, events_pb2.Event] | None:
        """The next event, or None once the follower ended and all are taken."""
        while not self._items:
            if self._closed:
                return None
            self._ready = asyncio.get_running_loop().create_future()
            await self._ready
        _wake(self._room)
        return self._items.popleft()


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
