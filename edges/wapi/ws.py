"""The WebSocket adapter: one ``WapiConnection`` per socket at ``/wapi``.

It reads text frames, runs them through ``rpc`` and the dispatcher, and
writes replies and event notifications through a bounded outbox. Every
decision about the protocol is made in ``rpc``, ``session`` and
``methods``; this module only moves frames and owns the socket's life.

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
from collections import deque
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

from edges.wapi import forwarded, rpc
from edges.wapi.admission import Admission, refusal_message
from edges.wapi.core_client import call_metadata
from edges.wapi.dispatch import Dispatcher, internal_error
from edges.wapi.methods import Method
from edges.wapi.rpc import RpcError
from edges.wapi.session import Binding, RateLimiter, Verdict, token_refused

log = logging.getLogger("wac.edge")

PATH = "/wapi"

# Close codes; edges/README.md has the table for clients.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
UNAUTHENTICATED = 4401
TOO_SLOW = 4408

# How long a new subscription may stay silent before it counts as accepted.
# The core reports a refused Subscribe (OUT_OF_RANGE, UNAUTHENTICATED) at
# once, but sends nothing at all for an accepted one until its first event:
# gRPC sends response headers with the first message. Should the core send
# its headers on acceptance, the wait ends at once, with no change here.
SUBSCRIBE_SETTLE = 0.25

NOTIFICATION = "event"
EVENTS_METHOD = "EventsService.Subscribe"
# The outbox takes up to BURST x send_queue messages while the client's
# socket still drains (see WapiConnection._backed_up).
BURST = 4
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
    dispatcher: Dispatcher, limits: WsLimits, clock: Callable[[], float] = time.monotonic
) -> Callable[[ServerConnection], Any]:
    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None  # the handshake is complete
        query = parse_qs(urlsplit(ws.request.path).query)
        token = (query.get("access_token") or [""])[0]
        # The very address process_request counted the connection under.
        address = client_address(ws.request.headers, ws.remote_address, dispatcher.client.hop_key)
        await WapiConnection(ws, dispatcher, limits, Binding(token), address, clock).run()

    return handler


class _Close:
    """An outbox marker: close the socket once everything before it is sent."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _Outcome:
    """A request's response, and what to do once it has been queued."""

    __slots__ = ("after", "response")

    def __init__(self, response: dict[str, Any], after: Callable[[], None] | None = None) -> None:
        self.response = response
        self.after = after


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
            self.connection._notify(self, message)

    def ended(self, failure: RpcError | None) -> None:
        if self.held is not None:
            self.end = (failure,)
        else:
            self.connection._subscription_ended(self, failure)

    def start(self) -> None:
        held, self.held = self.held or [], None
        for message in held:
            self.connection._notify(self, message)
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
    """One WebSocket: its binding, its rate limiter, its outbox, its subscription."""

    __slots__ = (
        "_address",
        "_auth_extended",
        "_auth_timer",
        "_binding",
        "_clock",
        "_closer",
        "_closer_queued",
        "_closing",
        "_dispatcher",
        "_finisher",
        "_inflight",
        "_limiter",
        "_limits",
        "_outbox",
        "_queued_bytes",
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
        binding: Binding,
        address: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ws = ws
        self._dispatcher = dispatcher
        self._limits = limits
        self._binding = binding
        self._address = address
        self._clock = clock
        self._limiter = RateLimiter(
            rate=limits.rate_per_second,
            burst=limits.rate_burst,
            flood_after=limits.flood_close_after,
            now=clock(),
        )
        self._outbox: deque[str | _Close] = deque()
        self._queued_bytes = 0  # UTF-8 bytes of the texts in the outbox
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closer_queued = False  # a close marker ends the outbox: queue nothing more
        self._finisher: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._subscription: _Subscription | None = None
        # Made on the first Login or RefreshSession: most sockets log in once.
        self._session_lock: asyncio.Lock | None = None
        # Pending until the socket authenticates; None once it has.
        self._auth_timer: asyncio.TimerHandle | None = None
        self._auth_extended = False

    async def run(self) -> None:
        self._auth_timer = asyncio.get_running_loop().call_later(self._limits.auth_deadline, self._auth_expired)
        try:
            async for message in self._ws:
                if self._closing:
                    continue  # a close is under way: drain, execute nothing more
                if len(self._inflight) >= self._limits.max_inflight:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._frame(message))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        except ConnectionClosed:
            pass
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        self._closing = True
        self._authenticated()  # nothing left to time
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

    # -- incoming ------------------------------------------------------
    async def _frame(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                await self._binary()
            else:
                await self._text(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an edge bug: tell the client, keep no trace on the wire
            failure = internal_error("websocket frame", exc)
            self._send(rpc.encode(rpc.error(None, failure)))
            self._close_after_send(INTERNAL_ERROR, "internal error")

    async def _binary(self) -> None:
        if not self._admit(None):
            return
        error = RpcError(rpc.INVALID_REQUEST, "invalid request: binary frames are not supported; send JSON as text")
        self._send(rpc.encode(rpc.error(None, error)))

    async def _text(self, text: str) -> None:
        frame = rpc.parse(text, max_batch=self._limits.max_batch)
        replies: dict[int, dict[str, Any]] = {}
        admitted: list[tuple[int, rpc.Request]] = []
        for index, item in enumerate(frame.items):
            item_id = item.id
            verdict = self._check_rate()
            if verdict is None:
                return  # flood: the socket is closing
            if verdict > 0:
                replies[index] = rpc.error(item_id, rpc.rate_limited(verdict))
            elif isinstance(item, rpc.Request):
                admitted.append((index, item))
        if len(admitted) == 1:  # the common case, without gather's extra task
            outcomes = [await self._execute(admitted[0][1])]
        else:
            outcomes = await asyncio.gather(*(self._execute(request) for _, request in admitted))
        for (index, _), outcome in zip(admitted, outcomes, strict=True):
            replies[index] = outcome.response
        text_out = frame.response(replies)
        if text_out is not None:
            self._send(text_out)
        for outcome in outcomes:
            if outcome.after is not None:
                outcome.after()

    def _admit(self, request_id: rpc.JsonId) -> bool:
        verdict = self._check_rate()
        if verdict is None:
            return False
        if verdict > 0:
            self._send(rpc.encode(rpc.error(request_id, rpc.rate_limited(verdict))))
            return False
        return True

    def _check_rate(self) -> float | None:
        """0 to admit, the retry delay to reject, None when the flood closes the socket."""
        decision = self._limiter.check(self._clock())
        if decision.verdict is Verdict.CLOSE:
            self._abort(POLICY_VIOLATION, "flood: too many requests")
            return None
        if decision.verdict is Verdict.REJECT:
            return max(decision.retry_after, 1e-3)
        return 0.0

    async def _execute(self, request: rpc.Request) -> _Outcome:
        credential: str | None = None
        try:
            method, message = self._dispatcher.resolve(request)
            credential = self._binding.credential_for(method, hint=HINT)
            if method.server_streaming:
                outcome = await self._subscribe(request, method, message, credential)
                self._authenticated()  # the core accepted the token
                return outcome
            if method.opens_session:
                result = await self._open_session(method, message)
            else:
                result = await self._dispatcher.call(method, message, credential, self._address)
            self._authenticated()  # a session opened, or the core accepted the token
            return _Outcome(rpc.result(request.id, result))
        except RpcError as failure:
            after = None
            if token_refused(failure, credential):
                # The token is dead (revoked, expired): answer, then close, so
                # that the client logs in again instead of retrying.
                self._closing_soon()
                after = self._unauthenticated
            return _Outcome(rpc.error(request.id, failure), after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _Outcome(rpc.error(request.id, internal_error(request.method, exc)))

    async def _open_session(self, method: Method, message: Message) -> dict[str, Any]:
        """Login or RefreshSession, one at a time on this socket, in arrival order.

        Run concurrently (a batch of 20 Logins), every attempt would reach
        the password check before the first failure was counted; in turn,
        the throttle refuses the attempts beyond its limit.
        """
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()  # FIFO: waiters proceed in arrival order
        async with self._session_lock:
            result = await self._dispatcher.call(method, message, None, self._address)
            self._binding.bind(result)
        return result

    def _authenticated(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _auth_expired(self) -> None:
        self._auth_timer = None
        if self._closing:
            return
        lock = self._session_lock
        if lock is not None and lock.locked() and not self._auth_extended:
            # A Login is being checked (slow under load, or throttled): it
            # gets one more deadline to finish, not a close in its face.
            self._auth_extended = True
            self._auth_timer = asyncio.get_running_loop().call_later(self._limits.auth_deadline, self._auth_expired)
            return
        log.info("closing a websocket that did not authenticate", extra={"client": self._address})
        # Requests in flight (a slow Login) are answered first, then the close.
        self._close_after_send(
            UNAUTHENTICATED, _reason(f"unauthenticated: no login within {self._limits.auth_deadline:g} s")
        )

    def _unauthenticated(self) -> None:
        self._close_after_send(UNAUTHENTICATED, "unauthenticated: the session's token was refused")

    def _closing_soon(self) -> None:
        # Frames that arrive after a fatal answer are not executed.
        self._closing = True

    # -- subscriptions -------------------------------------------------
    async def _subscribe(
        self, request: rpc.Request, method: Method, message: Message, credential: str | None
    ) -> _Outcome:
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
            if self._subscription is subscription and not self._closing:
                subscription.start()
            else:
                subscription.cancel()

        return _Outcome(rpc.result(request.id, {}), start)

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

    def _notify(self, subscription: _Subscription, message: Message) -> None:
        if self._subscription is not subscription or self._closing:
            return
        self._send(rpc.notification_text(NOTIFICATION, self._dispatcher.stream_json.text(message)))
        if _ends_session(message):
            subscription.cancel()
            self._close_after_send(UNAUTHENTICATED, "unauthenticated: the session was revoked")

    def _subscription_ended(self, subscription: _Subscription, failure: RpcError | None) -> None:
        if self._subscription is not subscription or self._closing:
            return
        if failure is None or failure.code == UNAUTHENTICATED_STATUS:
            # The core ends a session's stream only when the session is over.
            self._close_after_send(UNAUTHENTICATED, "unauthenticated: the session ended")
        else:
            # The core restarted or failed: the client reconnects and resumes
            # from its last seq, which loses nothing.
            self._close_after_send(INTERNAL_ERROR, _reason(f"event stream failed: {failure.message}"))

    # -- outgoing ------------------------------------------------------
    def _send(self, text: str) -> None:
        if self._closer is not None or self._closer_queued:
            return
        limits = self._limits
        size = _utf8_size(text)
        queued = len(self._outbox)
        queued_bytes = self._queued_bytes + size
        if queued >= limits.send_queue or queued_bytes > limits.send_queue_bytes:
            if self._backed_up():
                self._abort(TOO_SLOW, "too slow to read: send queue full; reconnect and resume")
                return
            if queued >= BURST * limits.send_queue or queued_bytes > BURST * limits.send_queue_bytes:
                # A burst bigger than the client may take at once (a long
                # resume): the first send_queue messages (send_queue_bytes)
                # go out, then 4408; the client resumes from there, a step
                # further each time (the first message always goes).
                outbox = self._outbox
                while len(outbox) > 1 and (
                    len(outbox) > limits.send_queue or self._queued_bytes > limits.send_queue_bytes
                ):
                    dropped = outbox.pop()
                    if isinstance(dropped, str):
                        self._queued_bytes -= _utf8_size(dropped)
                log.info(
                    "closing a websocket",
                    extra={
                        "code": TOO_SLOW,
                        "reason": "burst",
                        "client": self._address,
                        "queued_bytes": queued_bytes,
                        "queued": queued + 1,
                    },
                )
                outbox.append(_Close(TOO_SLOW, "too much at once: reconnect and resume"))
                self._closer_queued = self._closing = True
                self._wake_writer()
                return
        self._outbox.append(text)
        self._queued_bytes = queued_bytes
        self._wake_writer()

    def _backed_up(self) -> bool:
        """Whether the client is not reading: bytes wait in user space only
        once the kernel's socket buffer is full. A burst (one batch of
        events from the core, a resume) fills the outbox before the writer
        runs at all; that is not a slow client."""
        transport = self._ws.transport
        return transport is None or transport.get_write_buffer_size() > 0

    def _close_after_send(self, code: int, reason: str) -> None:
        """Close once the requests in flight are answered and everything queued has gone out.

        A Logout answered while its own sessionRevoked event races it, for
        one, still gets its response. In-flight calls end within the call
        deadline, so the close waits no longer than that.
        """
        self._closing = True
        if self._closer is not None or self._finisher is not None:
            return
        current = asyncio.current_task()
        pending = [task for task in self._inflight if task is not current]
        self._finisher = asyncio.create_task(self._close_when_answered(pending, _Close(code, reason)))

    async def _close_when_answered(self, pending: list[asyncio.Task[None]], marker: _Close) -> None:
        if pending:
            await asyncio.wait(pending)
        if self._closer is None:
            self._outbox.append(marker)
            self._wake_writer()

    def _abort(self, code: int, reason: str) -> None:
        """Close now, dropping whatever is queued."""
        self._closing = True
        if self._closer is not None:
            return
        log.info(
            "closing a websocket",
            extra={
                "code": code,
                "reason": reason,
                "client": self._address,
                "queued_bytes": self._queued_bytes,
                "queued": len(self._outbox),
            },
        )
        self._outbox.clear()
        self._queued_bytes = 0
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._ws.close(code, reason))

    def _wake_writer(self) -> None:
        # The writer exists only while there is something to send, so an idle
        # connection costs no task.
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, _Close):
                    self._outbox.clear()
                    self._queued_bytes = 0
                    if self._closer is None:
                        self._closer = asyncio.create_task(self._ws.close(item.code, item.reason))
                    return
                self._queued_bytes -= _utf8_size(item)
                await self._ws.send(item)
        except ConnectionClosed:
            self._outbox.clear()
            self._queued_bytes = 0
        finally:
            self._writer = None


UNAUTHENTICATED_STATUS = grpc.StatusCode.UNAUTHENTICATED.value[0]


def _ends_session(message: Message) -> bool:
    """Whether an event says its session is over (wac.v1.Event.session_revoked)."""
    field = message.DESCRIPTOR.fields_by_name.get("session_revoked")
    return field is not None and message.HasField("session_revoked")


def _utf8_size(text: str) -> int:
    # isascii() is O(1) in CPython (the string knows its kind): nearly every
    # message is ASCII, and only the rest pay for an encode.
    return len(text) if text.isascii() else len(text.encode())


def _reason(text: str) -> str:
    # A close reason is at most 123 bytes of UTF-8.
    encoded = text.encode()
    if len(encoded) <= 123:
        return text
    return encoded[:120].decode(errors="ignore") + "..."
