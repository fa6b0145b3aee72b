"""Every socket's event subscription and every long poll (the HTTP
fallback's), over one stream to the core: EdgeStreamService.StreamEvents,
an internal hop (wac.internal.v1) that only wac's own hops may open.

A gRPC stream per socket costs the core and the edge one gRPC message each
per event, which is most of their work in a fan-out: one presence change
seen by 5,000 sockets was 5,000 messages each way. Over one stream the core
batches the deliveries of all sessions into a few messages.

The edge stays stateless: the core keeps each session's event log and
authorises each attachment with the session's own token, exactly as it
would a Subscribe. When the shared stream fails (the core restarted), every
subscription on it ends with that failure and its socket is closed; the
clients reconnect and resume from their last seq, which loses nothing. The
next subscription opens a new stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from edges.wapi.admission import ATTACH_WINDOW, AttachWindow
from edges.wapi.core_client import CoreClient, rich_status, status_error
from edges.wapi.metrics import EVENT_DELIVERY_LAG
from edges.wapi.rpc import RpcError
from wac.internal.v1 import stream_pb2

log = logging.getLogger("wac.edge")

METHOD = "EventsService.Subscribe"
_PATH = "/wac.internal.v1.EdgeStreamService/StreamEvents"
_CODES = {code.value[0]: code for code in grpc.StatusCode}

Request = stream_pb2.StreamEventsRequest


class Sink(Protocol):
    """Where one subscription's events go (a socket)."""

    def event(self, message: Message) -> None:
        """The subscription's next event, in order."""

    def ended(self, failure: RpcError | None) -> None:
        """The subscription is over: None when its session ended, else why."""


class _Subscription:
    __slots__ = ("accepted", "link", "sink")

    def __init__(self, sink: Sink, link: _Link) -> None:
        self.sink = sink
        self.link = link
        # Resolved with None once the core accepted, or with the refusal.
        self.accepted: asyncio.Future[RpcError | None] = asyncio.get_running_loop().create_future()


class _Link:
    """One StreamEvents call and the requests waiting to go out on it.

    The requests are at most an attach and a detach per socket, so the queue
    is bounded by the sockets the edge holds.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall, requests: asyncio.Queue[Request | None]) -> None:
        self.call = call
        self.requests = requests
        self.reader: asyncio.Task[None] | None = None


class EventStreams:
    """The edge's subscriptions, keyed by a number unique to the edge."""

    def __init__(self, client: CoreClient, *, deadline: float, attach_window: int = ATTACH_WINDOW) -> None:
        self._client = client
        self._deadline = deadline
        self._window: AttachWindow[asyncio.Future[None]] = AttachWindow(attach_window)
        self._keys = itertools.count(1)
        self._subscriptions: dict[int, _Subscription] = {}
        self._link: _Link | None = None
        self._closed = False
        # Events passed to a sink: an integer, read by a metrics scrape
        # (edges/wapi/metrics.py), so that a delivery costs one addition.
        self.delivered = 0

    async def subscribe(self, token: str, after_seq: int, address: str, sink: Sink) -> int:
        """Attach a session; returns its key once the core accepted it.

        Raises RpcError with the core's status when refused (bad token,
        events no longer kept), or when the core does not answer in time.
        Events may reach ``sink`` before this returns. Beyond the attach
        window's limit (a reconnect storm) it first waits its turn, and
        the core's deadline runs from then.
        """
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._window.enter(turn):
            try:
                await turn
            except asyncio.CancelledError:
                if turn.cancelled():
                    self._window.forget(turn)
                else:  # its turn came as it was cancelled
                    self._pass_turn()
                raise
        try:
            return await self._attach(token, after_seq, address, sink)
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        """An attachment was answered: its place goes to the next subscription still waiting."""
        while (waiter := self._window.leave()) is not None:
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _attach(self, token: str, after_seq: int, address: str, sink: Sink) -> int:
        if self._closed:
            raise RpcError(grpc.StatusCode.UNAVAILABLE.value[0], "the edge is stopping", {"status": "UNAVAILABLE"})
        link = self._open()
        key = next(self._keys)
        subscription = _Subscription(sink, link)
        self._subscriptions[key] = subscription
        attach = Request.Attach(subscription=key, access_token=token, after_seq=after_seq, client_address=address)
        link.requests.put_nowait(Request(attach=attach))
        try:
            failure = await asyncio.wait_for(asyncio.shield(subscription.accepted), self._deadline)
        except TimeoutError:
            self.unsubscribe(key)
            raise RpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
                f"the wac core did not accept the subscription within {self._deadline:g} s",
                {"status": "DEADLINE_EXCEEDED"},
            ) from None
        except asyncio.CancelledError:
            self.unsubscribe(key)
            raise
        if failure is not None:
            self._subscriptions.pop(key, None)
            raise failure
        return key

    @property
    def subscriptions(self) -> int:
        """Subscriptions attached or being attached."""
        return len(self._subscriptions)

    def unsubscribe(self, key: int) -> None:
        """Stop a subscription; its sink hears nothing more."""
        subscription = self._subscriptions.pop(key, None)
        if subscription is not None and subscription.link is self._link:
            subscription.link.requests.put_nowait(Request(detach=Request.Detach(subscription=key)))

    async def close(self) -> None:
        """End the stream; subscriptions still open end with UNAVAILABLE."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            link.call.cancel()
            if link.reader is not None:
                await asyncio.gather(link.reader, return_exceptions=True)

    # -- the shared stream ----------------------------------------------
    def _open(self) -> _Link:
        if self._link is not None and not self._link.call.done():
            return self._link
        requests: asyncio.Queue[Request | None] = asyncio.Queue()
        call = self._client.stream_stream(_PATH, stream_pb2.StreamEventsResponse, _requests(requests))
        link = _Link(call, requests)
        link.reader = asyncio.create_task(self._read(link), name="wapi-event-streams")
        self._link = link
        return link

    async def _read(self, link: _Link) -> None:
        failure: RpcError
        try:
            async for response in link.call:
                deliveries = response.deliveries
                for delivery in deliveries:
                    self._deliver(delivery)
                # Once per batch, not per event: the first event's lag
                # (an event without its publication time is not timed).
                for delivery in deliveries:
                    if delivery.HasField("event"):
                        published = delivery.event.time
                        if published.seconds:
                            lag = time.time() - published.seconds - published.nanos / 1e9
                            EVENT_DELIVERY_LAG.observe(max(0.0, lag))
                        break
            failure = RpcError(
                grpc.StatusCode.UNAVAILABLE.value[0],
                "the wac core ended the event stream; reconnect and resume",
                {"status": "UNAVAILABLE"},
            )
        except grpc.aio.AioRpcError as exc:
            failure = _stream_failure(exc)
        except asyncio.CancelledError:
            failure = RpcError(grpc.StatusCode.UNAVAILABLE.value[0], "the edge is stopping", {"status": "UNAVAILABLE"})
        except Exception:
            log.exception("the shared event stream failed")
            failure = RpcError(grpc.StatusCode.INTERNAL.value[0], "internal error in the edge", {"status": "INTERNAL"})
        finally:
            link.requests.put_nowait(None)
            if self._link is link:
                self._link = None
        for key, subscription in list(self._subscriptions.items()):
            if subscription.link is link:
                del self._subscriptions[key]
                _end(subscription, failure)

    def _deliver(self, delivery: stream_pb2.StreamEventsResponse.Delivery) -> None:
        outcome = delivery.WhichOneof("outcome")
        if outcome == "event":
            subscription = self._subscriptions.get(delivery.subscription)
            if subscription is not None:
                self.delivered += 1
                subscription.sink.event(delivery.event)
        elif outcome == "accepted":
            subscription = self._subscriptions.get(delivery.subscription)
            if subscription is not None and not subscription.accepted.done():
                subscription.accepted.set_result(None)
        elif outcome == "ended":
            subscription = self._subscriptions.pop(delivery.subscription, None)
            if subscription is not None:
                _end(subscription, _status_failure(delivery.ended))


def _stream_failure(exc: grpc.aio.AioRpcError) -> RpcError:
    """Why every subscription of a failed shared stream ended. A status the
    core sent itself (with its google.rpc details) is passed on; any other
    failure is the hop's: the core died or a proxy between (Envoy, in a
    cluster) reset the stream, which gRPC reports as INTERNAL or UNKNOWN.
    Each subscriber then reconnects and resumes from its last seq, so it is
    told UNAVAILABLE, as when the core ends the stream itself."""
    rich = rich_status(exc)
    # UNAVAILABLE (the core cannot be reached) keeps status_error's own message.
    if rich is None and exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        log.warning("the shared event stream broke", extra={"code": exc.code().name, "detail": exc.details()})
        return RpcError(
            grpc.StatusCode.UNAVAILABLE.value[0],
            "the wac core ended the event stream; reconnect and resume",
            {"status": "UNAVAILABLE"},
        )
    return status_error(METHOD, exc.code(), exc.details(), rich)


def _end(subscription: _Subscription, failure: RpcError | None) -> None:
    if not subscription.accepted.done():
        subscription.accepted.set_result(failure or _ended_before_accepted())
        return
    try:
        subscription.sink.ended(failure)
    except Exception:
        log.exception("a subscription's end could not be handled")


def _status_failure(status: status_pb2.Status) -> RpcError | None:
    if status.code == 0:
        return None
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return status_error(METHOD, code, status.message, status)


def _ended_before_accepted() -> RpcError:
    return RpcError(grpc.StatusCode.UNAUTHENTICATED.value[0], "the session ended", {"status": "UNAUTHENTICATED"})


async def _requests(queue: asyncio.Queue[Request | None]) -> AsyncIterator[Request]:
    while (request := await queue.get()) is not None:
        yield request
