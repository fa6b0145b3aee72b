"""The WebSocket adapter: one ``WapiConnection`` per socket at ``/wapi``.

It hands each frame to its ``Session`` (``session.py``), makes the core
calls the session asks for, feeds the socket's subscription into it, and
writes what the session queued. Every decision about the protocol is made
in ``session``, ``rpc`` and ``methods``; this module only moves frames and
owns the socket's life (its tasks, timer and subscription).

Guarantees:

* Each frame gets exactly the answer JSON-RPC 2.0 prescribes (none for
  notifications), and a bad frame never closes the socket.
* Requests in flight on one socket at the same time may complete in any
  order; a client that needs ordering waits for each response. At most
  ``max_inflight`` frames run at once; reading pauses beyond that.
* A subscription's result is sent before its first notification, and
  notifications keep the order of the stream.
* The outbox holds at most ``send_queue`` messages and ``send_queue_bytes``
  bytes while the client's socket is backed up, and never more than
  ``BURST`` times either: a client that does not read is closed with 4408
  rather than grow the edge's memory.
* A socket that has not authenticated within ``auth_deadline`` seconds (a
  Login or RefreshSession, or a call the core accepted with its token) is
  closed with 4401. An address holds at most ``max_connections_per_address``
  connections, and a page from an Origin not allowed gets no socket: both
  are refused at the upgrade (429, 403) with a JSON error body.
* Methods that open a session (Login, RefreshSession) run one at a time
  per socket, in the order they arrived, even inside one batch: the core's
  login throttle then sees each failure before the next attempt.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf.message import Message
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.protocol import State

from edges.wapi import forwarded, rpc
from edges.wapi.admission import Admission, refusal_message
from edges.wapi.core_client import call_metadata
from edges.wapi.dispatch import Dispatcher, internal_error, login_name
from edges.wapi.keepalive import Keepalive
from edges.wapi.methods import Method
from edges.wapi.metrics import OK, status_name, websocket_closed
from edges.wapi.rpc import RpcError
from edges.wapi.session import Binding, Close, Exchange, RateLimiter, Session, SessionLimits

log = logging.getLogger("wac.edge")

PATH = "/wapi"

# How long a new subscription may stay silent before it counts as accepted.
# The core reports a refused Subscribe (OUT_OF_RANGE, UNAUTHENTICATED) at
# once, but sends nothing at all for an accepted one until its first event:
# gRPC sends response headers with the first message. Should the core send
# its headers on acceptance, the wait ends at once, with no change here.
SUBSCRIBE_SETTLE = 0.25

EVENTS_METHOD = "EventsService.Subscribe"
HINT = (
    "call IdentityService.Login or IdentityService.RefreshSession on this socket, "
    "or connect with ?access_token=<access token>"
)


@dataclass(frozen=True, slots=True)
class WsLimits:
    """Per-connection bounds, from the edge configuration."""

    max_batch: int
    rate_per_second: float
    rate_burst: int
    flood_close_after: int
    send_queue: int
    max_inflight: int
    send_queue_bytes: int = 1 << 20
    auth_deadline: float = 10.0
    subscribe_settle: float = SUBSCRIBE_SETTLE

    def session(self) -> SessionLimits:
        return SessionLimits(
            max_batch=self.max_batch,
            send_queue=self.send_queue,
            send_queue_bytes=self.send_queue_bytes,
            auth_deadline=self.auth_deadline,
        )


def make_process_request(gate: Admission) -> Callable[[ServerConnection, HttpRequest], HttpResponse | None]:
    """The upgrade's checks, in order: the path (404), the Origin (403), the
    address's connection count (429); refusals carry a JSON error.

    The slot taken here is given back when the TCP connection is gone,
    whatever happened in between (a failed handshake included).
    """

    def process_request(connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        if urlsplit(request.path).path != PATH:
            return connection.respond(404, f"not found: the WAPI WebSocket is at {PATH}\n")
        origin = request.headers.get("Origin")
        if not gate.origins.allows(origin):
            return _json_refusal(connection, http.HTTPStatus.FORBIDDEN, 7, refusal_message(origin or ""))
        address = client_address(request.headers, connection.remote_address, gate.hop_key)
        if not gate.slots.acquire(address):
            log.info("refused a websocket: too many connections", extra={"client": address})
            return _json_refusal(
                connection,
                http.HTTPStatus.TOO_MANY_REQUESTS,
                8,
                f"too many connections from your address: at most {gate.slots.per_address} at once",
            )
        connection.connection_lost_waiter.add_done_callback(lambda _: gate.slots.release(address))
        return None

    return process_request


def _json_refusal(connection: ServerConnection, status: http.HTTPStatus, code: int, message: str) -> HttpResponse:
    """A refused upgrade: the HTTP fallback's JSON error object, with the gRPC code."""
    body = rpc.encode({"error": {"code": code, "message": message}}) + "\n"
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def client_address(headers: Headers, peer: Any, hop_key: str) -> str:
    """The browser's address: forwarded by a trusted hop (Envoy), else the peer's."""
    peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
    return forwarded.client_address(peer_host, headers, hop_key)


def make_handler(
    dispatcher: Dispatcher,
    limits: WsLimits,
    clock: Callable[[], float] = time.monotonic,
    *,
    keepalive: Keepalive | None = None,
) -> Callable[[ServerConnection], Any]:
    """The connection handler; ``keepalive`` pings the sockets (None: no pings)."""
    session_limits = limits.session()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None  # the handshake is complete
        if keepalive is not None:
            keepalive.watch(ws)
        query = parse_qs(urlsplit(ws.request.path).query)
        token = (query.get("access_token") or [""])[0]
        # The very address process_request counted the connection under.
        address = client_address(ws.request.headers, ws.remote_address, dispatcher.client.hop_key)
        await WapiConnection(ws, dispatcher, limits, session_limits, Binding(token), address, clock).run()

    return handler


class _Subscription:
    """A socket's event subscription: the sink its events arrive at.

    Events that arrive before the subscription's result is queued are held,
    so that the result always precedes the first notification.
    """

    __slots__ = ("call", "connection", "end", "held", "key", "method", "task")

    def __init__(self, connection: WapiConnection, method: Method) -> None:
        self.connection = connection
        self.method = method
        self.held: list[Message] | None = []
        self.end: tuple[RpcError | None] | None = None  # an end that arrived while held
        self.key: int | None = None  # on the shared event stream
        self.call: grpc.aio.UnaryStreamCall | None = None  # a stream of its own
        self.task: asyncio.Task[None] | None = None

    def event(self, message: Message) -> None:
        if self.held is not None:
            self.held.append(message)
        else:
            self.connection._event(self, message)

    def ended(self, failure: RpcError | None) -> None:
        if self.held is not None:
            self.end = (failure,)
        else:
            self.connection._subscription_ended(self, failure)

    def start(self) -> None:
        held, self.held = self.held or [], None
        for message in held:
            self.connection._event(self, message)
        if self.end is not None:
            self.connection._subscription_ended(self, self.end[0])

    def cancel(self) -> None:
        if self.key is not None:
            self.connection._dispatcher.events.unsubscribe(self.key)
        if self.call is not None:
            self.call.cancel()
        if self.task is not None:
            self.task.cancel()


class WapiConnection:
    """One WebSocket: its session, the tasks that serve it, its subscription."""

    __slots__ = (
        "_address",
        "_auth_timer",
        "_clock",
        "_closer",
        "_dispatcher",
        "_finisher",
        "_inflight",
        "_limits",
        "_session",
        "_session_lock",
        "_subscription",
        "_writer",
        "_ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        dispatcher: Dispatcher,
        limits: WsLimits,
        session_limits: SessionLimits,
        binding: Binding,
        address: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ws = ws
        self._dispatcher = dispatcher
        self._limits = limits
        self._address = address
        self._clock = clock
        now = clock()
        self._session = Session(
            session_limits,
            binding=binding,
            limiter=RateLimiter(
                rate=limits.rate_per_second,
                burst=limits.rate_burst,
                flood_after=limits.flood_close_after,
                now=now,
            ),
            hint=HINT,
            now=now,
            stream_json=dispatcher.stream_json,
            backed_up=self._backed_up,
            address=address,
        )
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._finisher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._subscription: _Subscription | None = None
        # Made on the first Login or RefreshSession: most sockets log in once.
        self._session_lock: asyncio.Lock | None = None
        self._auth_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self._auth_timer = asyncio.get_running_loop().call_later(self._limits.auth_deadline, self._tick)
        session = self._session
        try:
            async for message in self._ws:
                if session.closing:
                    continue  # a close is under way: drain, execute nothing more
                if len(self._inflight) >= self._limits.max_inflight:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                exchange = self._receive(message)
                if exchange is None:
                    continue  # answered by the edge alone: no task
                task = asyncio.create_task(self._answer(exchange))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        except ConnectionClosed:
            pass
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        self._session.closed()
        websocket_closed(_close_code(self._ws))
        if self._auth_timer is not None:
            self._auth_timer.cancel()  # nothing left to time
            self._auth_timer = None
        tasks = [*self._inflight]
        if self._subscription is not None:
            self._subscription.cancel()
            if self._subscription.task is not None:
                tasks.append(self._subscription.task)
        for task in tasks:
            task.cancel()
        if self._finisher is not None:
            tasks.append(self._finisher)
        await asyncio.gather(*tasks, return_exceptions=True)
        # The writer may still hold a close marker; it starts the closer.
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)

    def _tick(self) -> None:
        lock = self._session_lock
        wait = self._session.tick(self._clock(), login_pending=lock is not None and lock.locked())
        self._auth_timer = None if wait is None else asyncio.get_running_loop().call_later(wait, self._tick)
        self._flush()

    # -- incoming ------------------------------------------------------
    def _receive(self, message: str | bytes) -> Exchange | None:
        """Parse and admit one frame as it arrives; the requests it asks the
        core for, or None when it is answered already."""
        session = self._session
        exchange = None
        try:
            if isinstance(message, bytes):
                session.receive_binary(self._clock())
            else:
                exchange = session.receive_text(message, self._clock())
        except Exception as exc:  # an edge bug: tell the client, keep no trace on the wire
            session.frame_failed(internal_error("websocket frame", exc))
        self._flush()
        return exchange

    async def _answer(self, exchange: Exchange) -> None:
        try:
            await self._exchange(exchange)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an edge bug: tell the client, keep no trace on the wire
            self._session.frame_failed(internal_error("websocket frame", exc))
        self._flush()

    async def _exchange(self, exchange: Exchange) -> None:
        requests = exchange.requests
        if len(requests) == 1:  # the common case, without gather's extra task
            index, request = requests[0]
            starts = [await self._execute(exchange, index, request)]
        else:
            starts = await asyncio.gather(*(self._execute(exchange, index, request) for index, request in requests))
        self._session.finish(exchange)
        for start in starts:
            if start is not None:
                start()

    async def _execute(self, exchange: Exchange, index: int, request: rpc.Request) -> Callable[[], None] | None:
        """Make one request's call; a subscription returns what starts it once its result is queued."""
        session = self._session
        try:
            method, message = self._dispatcher.resolve(request)
            credential = session.credential_for(method)
        except RpcError as failure:
            self._dispatcher.refused(request, failure, session.binding.username)
            session.failed(exchange, index, request, failure, None)
            return None
        except Exception as exc:
            session.failed(exchange, index, request, internal_error(request.method, exc), None)
            return None
        try:
            if method.server_streaming:
                # Counted and timed as unary calls are, until the core accepted it.
                measured, started = self._dispatcher.measured(method), time.perf_counter()
                try:
                    start = await self._subscribe(method, message, credential)
                except RpcError as failure:
                    measured.finished(status_name(failure.code), time.perf_counter() - started)
                    raise
                measured.finished(OK, time.perf_counter() - started)
                session.succeeded(exchange, index, request, {})
                return start
            if method.opens_session:
                await self._open_session(exchange, index, request, method, message)
            else:
                result = await self._dispatcher.call(
                    method,
                    message,
                    credential,
                    self._address,
                    traceparent=request.traceparent,
                    subscriber=session.binding.username,
                )
                session.succeeded(exchange, index, request, result)
        except RpcError as failure:
            session.failed(exchange, index, request, failure, credential)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            session.failed(exchange, index, request, internal_error(request.method, exc), None)
        return None

    async def _open_session(
        self, exchange: Exchange, index: int, request: rpc.Request, method: Method, message: Message
    ) -> None:
        """Login or RefreshSession, one at a time on this socket, in arrival order.

        Run concurrently (a batch of 20 Logins), every attempt would reach
        the password check before the first failure was counted; in turn,
        the throttle refuses the attempts beyond its limit.
        """
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()  # FIFO: waiters proceed in arrival order
        async with self._session_lock:
            result = await self._dispatcher.call(
                method, message, None, self._address, traceparent=request.traceparent, subscriber=login_name(message)
            )
            self._session.opened(exchange, index, request, result)

    # -- subscriptions -------------------------------------------------
    async def _subscribe(self, method: Method, message: Message, credential: str | None) -> Callable[[], None]:
        subscription = _Subscription(self, method)
        if method.name == EVENTS_METHOD:
            # The session's events: over the edge's one stream to the core.
            after_seq = getattr(message, "after_seq")  # noqa: B009 - SubscribeRequest's field
            subscription.key = await self._dispatcher.events.subscribe(
                credential or "", after_seq, self._address, subscription
            )
        else:
            await self._open_stream(subscription, message, credential)
        if self._subscription is not None:
            self._subscription.cancel()  # one subscription per socket: the new one replaces it
        self._subscription = subscription

        def start() -> None:
            if self._subscription is subscription and not self._session.closing:
                subscription.start()
            else:
                subscription.cancel()

        return start

    async def _open_stream(self, subscription: _Subscription, message: Message, credential: str | None) -> None:
        """Any other server-streaming method: a gRPC stream of its own, pumped into the sink."""
        method = subscription.method
        call = self._dispatcher.client.stream(method, message, call_metadata(credential, self._address))
        try:
            failure = await self._settle(method, call)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if failure is not None:
            call.cancel()
            raise failure
        subscription.call = call
        subscription.task = asyncio.create_task(self._pump(subscription, call))

    async def _settle(self, method: Method, call: grpc.aio.UnaryStreamCall) -> RpcError | None:
        """Wait until the core has accepted or refused the stream (see SUBSCRIBE_SETTLE)."""
        try:
            # Cancelling this wait leaves the call intact: each waiter has its own future.
            await asyncio.wait_for(call.initial_metadata(), self._limits.subscribe_settle)
        except TimeoutError:
            return None
        if call.done():
            return await self._dispatcher.client.stream_error(method, call)
        return None

    async def _pump(self, subscription: _Subscription, call: grpc.aio.UnaryStreamCall) -> None:
        method = subscription.method
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                subscription.event(message)
            failure = await self._dispatcher.client.stream_error(method, call)
        except grpc.aio.AioRpcError as exc:
            failure = await self._dispatcher.client.stream_error(method, call)
            if failure is None:  # pragma: no cover - an AioRpcError always has a status
                failure = RpcError(exc.code().value[0], exc.details() or "stream failed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an edge bug: logged with a reference, the socket closed
            call.cancel()
            failure = internal_error(method.name, exc)
        subscription.ended(failure)

    def _event(self, subscription: _Subscription, message: Message) -> None:
        if self._subscription is not subscription:
            return
        if self._session.event(message):
            subscription.cancel()
        self._flush()

    def _subscription_ended(self, subscription: _Subscription, failure: RpcError | None) -> None:
        if self._subscription is not subscription:
            return
        self._session.stream_ended(failure)
        self._flush()

    # -- outgoing ------------------------------------------------------
    def _flush(self) -> None:
        """Act on what the session decided: close now, close once answered, or send."""
        session = self._session
        if session.abort is not None:
            if self._closer is None:
                if self._writer is not None:
                    self._writer.cancel()
                self._closer = asyncio.create_task(self._ws.close(session.abort.code, session.abort.reason))
            return
        if session.farewell is not None and self._finisher is None and self._closer is None:
            # In-flight calls end within the call deadline, so the close waits no longer than that.
            current = asyncio.current_task()
            pending = [task for task in self._inflight if task is not current]
            self._finisher = asyncio.create_task(self._close_when_answered(pending))
        if session.outbox and self._writer is None and not self._send_now():
            # The writer exists only while the socket cannot take what is
            # queued at once, so an idle connection costs no task.
            self._writer = asyncio.create_task(self._write())

    def _send_now(self) -> bool:
        """Send what is queued without a task while the kernel takes it all;
        True when nothing is left for the writer.

        A task and ``ws.send`` per message were half of the edge's CPU per
        event in a fan-out (one event to thousands of sockets). This is what
        ``ws.send`` does when it need not wait: frame the text and write it
        to the transport. Anything else goes to the writer, as before: a
        Close, a socket no longer open, or bytes still waiting in user space
        (the client is slow; the writer then waits for the drain).
        """
        ws = self._ws
        protocol = ws.protocol
        transport = ws.transport
        session = self._session
        outbox = session.outbox
        while outbox:
            if (
                isinstance(outbox[0], Close)
                or protocol.state is not State.OPEN
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                return False
            text = session.next_out()
            assert isinstance(text, str)
            protocol.send_text(text.encode())
            ws.send_data()
        return True

    async def _close_when_answered(self, pending: list[asyncio.Task[None]]) -> None:
        if pending:
            await asyncio.wait(pending)
        if self._closer is None:
            self._session.queue_farewell()
            self._flush()

    def _backed_up(self) -> bool:
        """Whether the client is not reading: bytes wait in user space only
        once the kernel's socket buffer is full. A burst (one batch of
        events from the core, a resume) fills the outbox before the writer
        runs at all; that is not a slow client."""
        transport = self._ws.transport
        return transport is None or transport.get_write_buffer_size() > 0

    async def _write(self) -> None:
        session = self._session
        try:
            while (item := session.next_out()) is not None:
                if isinstance(item, Close):
                    if self._closer is None:
                        self._closer = asyncio.create_task(self._ws.close(item.code, item.reason))
                    return
                await self._ws.send(item)
        except ConnectionClosed:
            session.drop_outbox()
        finally:
            self._writer = None


def _close_code(ws: ServerConnection) -> int | None:
    """The code the socket was closed with: the edge's own when it closed
    first (a client too slow to read may never echo it), else the client's;
    None when no close frame came either way (dropped)."""
    protocol = ws.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and protocol.close_rcvd_then_sent is not True:
        return sent.code
    return received.code if received is not None else None
