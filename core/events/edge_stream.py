"""EdgeStreamService (wac.internal.v1): many sessions' event streams over
one stream, for an edge that holds the clients' connections.

An internal hop, not part of the public contract: only wac's own hops open
it (the hop key), and the front door never routes it. Each attachment is one
session's Subscribe, authorised with that session's access token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.rpc import status_pb2

from core import errors, failures
from core.auth import policy
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal, current, set_current
from core.clock import SYSTEM_CLOCK, Clock
from core.events.handler import EventsHandler
from core.nul import nul_field
from wac.internal.v1 import stream_pb2, stream_pb2_grpc
from wac.v1 import events_pb2

log = logging.getLogger("wac.events")

# Each attachment is authorised as this method would be for its session.
SUBSCRIBE = "/wac.v1.EventsService/Subscribe"
# One response carries at most this many deliveries or about this many bytes
# (an event with an SDP is up to 32 KiB; the edge accepts 4 MiB).
MAX_BATCH = 512
MAX_BATCH_BYTES = 1 << 20
# A response of fewer deliveries waits one turn of the event loop for more:
# each response is one gRPC write (13.5% of the core's samples during call
# set-ups), a turn of the loop a few microseconds.
COALESCE_BELOW = 4

Delivery = stream_pb2.StreamEventsResponse.Delivery
# What waits in a stream's queue: a delivery, or an event with its
# subscription and seq, put into the response only when a batch is built
# (a Delivery made first was one more copy of every event, each a few us).
# The event is shared by every session it went to: copied into the
# response, where it gets the session's seq.
Queued = Delivery | tuple[int, int, events_pb2.Event]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Bounds of StreamEvents (config [events]).

    ``max_attachments``: live subscriptions on one stream; an attach beyond
    is refused (RESOURCE_EXHAUSTED) and the stream carries on.
    ``max_streams``: streams open at once per caller (key and peer address);
    one beyond is refused with RESOURCE_EXHAUSTED.
    ``send_queue``: deliveries waiting for one stream. When it is full the
    subscriptions wait (their events stay in the session logs, so a slow
    edge loses nothing); when it stays full, nothing taken, for
    ``stall_seconds``, the edge is not reading and the stream ends with
    RESOURCE_EXHAUSTED, freeing all it held.
    """

    max_attachments: int = 20_000
    max_streams: int = 8
    send_queue: int = 20_000
    stall_seconds: float = 30.0


class EdgeStreamServicer(stream_pb2_grpc.EdgeStreamServiceServicer):
    def __init__(
        self,
        events: EventsHandler,
        authenticate: Callable[[str], Awaitable[Principal]],
        limits: StreamLimits | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clock`` times the stall of a stream (``limits.stall_seconds``)."""
        self._events = events
        self._authenticate = authenticate
        self.limits = limits or StreamLimits()
        self.clock = clock
        # Open streams per caller, and the streams themselves (their queues
        # are what a test or an operator inspects).
        self._streams_by_caller: dict[str, int] = {}
        self.streams: set[_Stream] = set()
        # Statuses still on their way to streams that were ended (referenced
        # here so that they are not collected mid-flight).
        self._endings: set[asyncio.Task[None]] = set()

    def spawn(self, ending: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(ending, name="events-stream-ending")
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def StreamEvents(
        self,
        requests: AsyncIterator[stream_pb2.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stream_pb2.StreamEventsResponse]:
        caller = _caller(context)
        open_now = self._streams_by_caller.get(caller, 0)
        if open_now >= self.limits.max_streams:
            raise failures.Exhausted(
                f"this caller has {open_now} event streams open, the most it may have; close one first"
            )
        self._streams_by_caller[caller] = open_now + 1
        stream = _Stream(self, self.limits)
        self.streams.add(stream)
        reader = asyncio.create_task(stream.read(requests), name="events-stream-requests")
        handler = asyncio.current_task()
        assert handler is not None
        watchdog = asyncio.create_task(stream.watch(handler, context), name="events-stream-watchdog")
        try:
            while True:
                response = await stream.next_response()
                if response is None:
                    return
                yield response
        finally:
            reader.cancel()
            watchdog.cancel()
            self.streams.discard(stream)
            left = self._streams_by_caller.pop(caller, 1) - 1
            if left > 0:
                self._streams_by_caller[caller] = left
            await stream.close()
            await asyncio.gather(reader, watchdog, return_exceptions=True)

    async def _attachment(self, attach: stream_pb2.StreamEventsRequest.Attach, out: _Stream) -> None:
        """One subscription of a stream, from Attach to its end."""
        key = attach.subscription
        try:
            # The interceptor checks unary requests; a stream's requests are checked here.
            field = nul_field(attach)
            if field is not None:
                raise failures.Invalid(f"attach.{field}", "must not contain NUL characters (U+0000)")
            if not attach.access_token:
                raise failures.Unauthenticated("attach carries no access_token")
            principal = await self._authenticate(attach.access_token)
            policy.check(policy.rule_for(SUBSCRIBE), principal, SUBSCRIBE)
            if not isinstance(principal, SubscriberPrincipal):
                raise failures.PermissionDenied("an event stream is a session's: attach with an access token")
            set_current(principal, attach.client_address)
            pending = await self._events.open(principal, attach.after_seq)
            await out.put(Delivery(subscription=key, accepted=empty_pb2.Empty()))
            await self._events.follow(principal, attach.after_seq, pending, out.outbox(key))
            await out.put(Delivery(subscription=key, ended=status_pb2.Status()))
        except failures.Failure as exc:
            await out.put(Delivery(subscription=key, ended=errors.from_failure(exc).status()))
        except asyncio.CancelledError:
            raise
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("internal error in a StreamEvents subscription (ref %s)", ref)
            message = f"internal error (ref {ref}); the operator's log has the details"
            await out.put(Delivery(subscription=key, ended=status_pb2.Status(code=13, message=message)))
        finally:
            out.finished(key)


class _Stream:
    """The subscriptions of one StreamEvents call and their outgoing queue."""

    def __init__(self, servicer: EdgeStreamServicer, limits: StreamLimits) -> None:
        self._servicer = servicer
        self._limits = limits
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._outboxes: dict[int, _Outbox] = {}
        # The outgoing queue, at most send_queue long (an asyncio.Queue's
        # put_nowait was a third of a delivery's cost in a fan-out); None
        # marks the end of the requests: the edge half-closed.
        self._items: deque[Queued | None] = deque()
        self._limit = limits.send_queue
        # The response builder waiting for a delivery; subscriptions
        # waiting for room.
        self._ready: asyncio.Future[None] | None = None
        self._room: deque[asyncio.Future[None]] = deque()
        self._clock = servicer.clock
        self._taken_at = self._clock.monotonic()

    @property
    def queued(self) -> int:
        """Deliveries waiting for the edge to take them (at most send_queue)."""
        return len(self._items)

    @property
    def attachments(self) -> int:
        return len(self._tasks)

    async def read(self, requests: AsyncIterator[stream_pb2.StreamEventsRequest]) -> None:
        try:
            async for request in requests:
                action = request.WhichOneof("action")
                if action == "attach":
                    await self._attach(request.attach)
                elif action == "detach":
                    key = request.detach.subscription
                    task = self._tasks.pop(key, None)
                    if task is not None:
                        task.cancel()
                    self._detach(key)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            # The edge went away mid-read (cancelled, connection lost): the
            # normal end of a stream, which the handler ends in turn.
            log.debug("an event stream's requests ended early")
        await self.put(None)

    async def _attach(self, attach: stream_pb2.StreamEventsRequest.Attach) -> None:
        key = attach.subscription
        refusal: failures.Failure | None = None
        limit = self._limits.max_attachments
        if key in self._tasks:
            refusal = failures.Invalid("attach.subscription", f"subscription {key} is already live on this stream")
        elif len(self._tasks) >= limit:
            refusal = failures.Exhausted(f"this stream has {limit} subscriptions, the most it may have")
        if refusal is not None:
            # Waits when the queue is full: the edge's requests then wait too.
            await self.put(Delivery(subscription=key, ended=errors.from_failure(refusal).status()))
            return
        self._detach(key)  # a detached subscription's task may not have ended yet
        self._outboxes[key] = _Outbox(self, key)
        self._tasks[key] = asyncio.create_task(self._servicer._attachment(attach, self))

    def outbox(self, key: int) -> _Outbox:
        """Where the subscription's events go (handler.Outbox)."""
        return self._outboxes[key]

    def _detach(self, key: int) -> None:
        # Its listener is handed events until its task ends: from now on
        # they are refused, not sent under a key the edge may reuse.
        outbox = self._outboxes.pop(key, None)
        if outbox is not None:
            outbox.live = False

    async def put(self, delivery: Queued | None) -> None:
        """Queue ``delivery``, waiting for room."""
        while len(self._items) >= self._limit:
            room = asyncio.get_running_loop().create_future()
            self._room.append(room)
            try:
                await room
            except asyncio.CancelledError:
                if room.done() and not room.cancelled():
                    self._make_room(1)  # the room it was given goes to the next
                elif room in self._room:
                    self._room.remove(room)
                raise
        self._items.append(delivery)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def offer(self, delivery: Queued) -> bool:
        """Queue ``delivery`` if there is room now."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(delivery)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)
        return True

    def finished(self, key: int) -> None:
        task = self._tasks.get(key)
        if task is asyncio.current_task():
            del self._tasks[key]
            self._detach(key)

    async def next_response(self) -> stream_pb2.StreamEventsResponse | None:
        """The next batch of deliveries, or None once the requests ended."""
        items = self._items
        while not items:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._ready
            finally:
                self._ready = None
        if len(items) < COALESCE_BELOW:
            # One turn of the loop first: the deliveries that the tasks
            # ready now go on to queue (a call's event to its other party,
            # a log-in's presence) join this response instead of each
            # costing a gRPC message of its own.
            await asyncio.sleep(0)
        self._taken_at = self._clock.monotonic()
        first = items.popleft()
        if first is None:
            return None
        response = stream_pb2.StreamEventsResponse()
        deliveries = response.deliveries
        size = _add(deliveries, first)
        count = 1
        # A fan-out queues the same event for many sessions: sized once.
        shared: events_pb2.Event | None = None
        shared_size = 0
        while items and count < MAX_BATCH and size < MAX_BATCH_BYTES:
            item = items.popleft()
            if item is None:
                items.appendleft(None)  # end after this batch
                break
            if isinstance(item, tuple):
                key, seq, event = item
                deliveries.add(subscription=key, event=event).event.seq = seq
                if event is not shared:
                    shared, shared_size = event, event.ByteSize() + 16
                size += shared_size
            else:
                size += _add(deliveries, item)
            count += 1
        self._make_room(count)
        return response

    def _make_room(self, count: int) -> None:
        """Wake up to ``count`` subscriptions waiting for room."""
        room = self._room
        while count > 0 and room:
            waiter = room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    async def watch(self, handler: asyncio.Task[Any], context: grpc.aio.ServicerContext) -> None:
        """End the stream when its queue stays full with nothing taken for
        stall_seconds: the edge stopped reading, and gRPC would otherwise
        hold the stream, its subscriptions and their deliveries for ever."""
        stall = self._limits.stall_seconds
        while True:
            await self._clock.sleep(min(stall, 1.0))
            if len(self._items) < self._limit or self._clock.monotonic() - self._taken_at < stall:
                continue
            log.warning("an event stream took nothing for %g s with its queue full: ending it", stall)
            message = f"the event stream took no deliveries for {stall:g} s with {len(self._items)} waiting"
            # The status is queued behind the data the edge has not read,
            # so sending it may take as long as the edge takes to read: it
            # is sent from a task of its own (bounded), while the handler,
            # blocked on that write, is cancelled now to free what it holds.
            self._servicer.spawn(_end_stream(context, message, stall))
            await asyncio.sleep(0)  # the status is submitted before the cancel
            handler.cancel()
            return

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for key in tuple(self._outboxes):
            self._detach(key)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Deliveries nobody will take: dropped at once, not when the stream
        # object is collected.
        self._items.clear()


async def _end_stream(context: grpc.aio.ServicerContext, message: str, patience: float) -> None:
    with contextlib.suppress(grpc.aio.AbortError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError):
        await asyncio.wait_for(context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message), patience)


def _add(deliveries: RepeatedCompositeFieldContainer[Delivery], item: Queued) -> int:
    """Put ``item`` into a response's deliveries; about how many bytes it takes."""
    if isinstance(item, tuple):
        key, seq, event = item
        deliveries.add(subscription=key, event=event).event.seq = seq
        # The event's size, and a few bytes for its subscription, seq and tags.
        return event.ByteSize() + 16
    deliveries.append(item)
    return item.ByteSize()


class _Outbox:
    """One subscription's way into its stream's queue (handler.Outbox)."""

    __slots__ = ("_key", "_stream", "live")

    def __init__(self, stream: _Stream, key: int) -> None:
        self._stream = stream
        self._key = key
        self.live = True

    def offer(self, seq: int, event: events_pb2.Event) -> bool:
        return self.live and self._stream.offer((self._key, seq, event))

    async def put(self, seq: int, event: events_pb2.Event) -> None:
        await self._stream.put((self._key, seq, event))


def _caller(context: grpc.aio.ServicerContext) -> str:
    """Whom a stream counts against: the key that opened it, from its peer."""
    principal = current()
    name = principal.key_name if isinstance(principal, ServicePrincipal) else "-"
    peer = (context.peer() or "").rsplit(":", 1)[0]
    return f"{name}@{peer}"
