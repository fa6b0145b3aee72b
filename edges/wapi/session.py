"""One WAPI connection's protocol, as pure code: frames, events and ``now``
in; replies, notifications and closes out.

Nothing here reads a clock, waits or touches a socket (the shape of
python-websockets' sans-I/O protocol objects). The adapters — the WebSocket
(``ws.py``) and the HTTP fallback (``http.py``) — make the core's calls the
session asks for, pass the results and ``now`` back, and move what the
session queued in ``outbox`` to their transport; ``abort`` and ``farewell``
tell them how the connection ends. The edge keeps no state beyond one
connection: which access token it presents for it, how fast it may call,
and what waits to be sent.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from edges.wapi import rpc
from edges.wapi.methods import Method, StreamJson
from edges.wapi.rpc import RpcError

log = logging.getLogger("wac.edge")

UNAUTHENTICATED = 16

# Close codes; edges/README.md has the table for clients. Over HTTP, where
# nothing is closed, CLOSE_UNAUTHENTICATED is the status 401.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
CLOSE_UNAUTHENTICATED = 4401
TOO_SLOW = 4408

NOTIFICATION = "event"
# The outbox takes up to BURST x send_queue messages while the client's
# transport still drains (see Session.send).
BURST = 4


class Binding:
    """The access token a connection presents to the core, if any.

    A connection is bound by ``?access_token=`` at connect time, or by the
    result of a method that opens a session (Login, RefreshSession); the
    latest result wins, so a refresh replaces the token in place.
    """

    __slots__ = ("session_id", "token", "username")

    def __init__(self, token: str | None = None) -> None:
        self.token = token or None
        self.session_id: str | None = None
        # Whom the connection logged in as, for the log lines ("" until a
        # Login or RefreshSession result names it).
        self.username = ""

    @property
    def bound(self) -> bool:
        return self.token is not None

    def bind(self, session: Mapping[str, Any]) -> None:
        """Bind to a wac.v1.Session result (proto3 JSON)."""
        token = session.get("accessToken")
        if isinstance(token, str) and token:
            self.token = token
            session_id = session.get("sessionId")
            self.session_id = session_id if isinstance(session_id, str) else None
            subscriber = session.get("subscriber")
            username = subscriber.get("username") if isinstance(subscriber, dict) else None
            self.username = username if isinstance(username, str) else ""

    def credential_for(self, method: Method, *, hint: str) -> str | None:
        """The bearer token to send with ``method``.

        Methods that open a session authenticate by their params and go
        without one, so that a dead token cannot block a fresh login. Any
        other method on an unbound connection fails here, before the core.
        """
        if method.opens_session:
            return None
        if self.token is None:
            raise not_logged_in(hint)
        return self.token


def not_logged_in(hint: str) -> RpcError:
    return RpcError(
        UNAUTHENTICATED,
        f"not logged in: {hint}",
        {"status": "UNAUTHENTICATED", "reason": "NOT_LOGGED_IN"},
    )


def token_refused(error: RpcError, credential: str | None) -> bool:
    """Whether the core refused the token the call carried (revoked, expired).

    Only then is the connection's binding dead; an UNAUTHENTICATED answer to
    a call that carried no token (a wrong password at Login) is an ordinary
    error.
    """
    return credential is not None and error.code == UNAUTHENTICATED


class Verdict(enum.Enum):
    ADMIT = "admit"
    REJECT = "reject"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    retry_after: float = 0.0


class RateLimiter:
    """A token bucket over requests, with a flood cut-off.

    ``burst`` requests may arrive at once, then ``rate`` per second. Each
    request beyond that is rejected with the time until the next token. A
    connection that keeps pushing is a flood: after ``flood_after`` rejected
    requests with no pause long enough to refill the bucket completely, the
    verdict is CLOSE. A client that backs off (lets the bucket fill) starts
    its count again.

    Bounds: ``rate`` > 0, ``burst`` >= 1, ``flood_after`` >= 1.
    """

    __slots__ = ("_burst", "_flood_after", "_rate", "_rejected", "_stamp", "_tokens")

    def __init__(self, *, rate: float, burst: int, flood_after: int, now: float) -> None:
        if rate <= 0 or burst < 1 or flood_after < 1:
            raise ValueError("rate must be > 0, burst and flood_after >= 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._flood_after = flood_after
        self._tokens = float(burst)
        self._stamp = now
        self._rejected = 0

    def check(self, now: float) -> Decision:
        """Account for one request arriving at ``now``."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= self._burst:
            self._rejected = 0
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Decision(Verdict.ADMIT)
        self._rejected += 1
        retry_after = (1.0 - self._tokens) / self._rate
        if self._rejected >= self._flood_after:
            return Decision(Verdict.CLOSE, retry_after)
        return Decision(Verdict.REJECT, retry_after)


@dataclass(frozen=True, slots=True)
class Close:
    """How a connection ends: a WebSocket close code and its reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds of one session, from the edge configuration.

    ``send_queue`` (>= 1) messages and ``send_queue_bytes`` bytes may wait
    in the outbox while the transport is backed up; ``auth_deadline``
    (seconds, None for none) is how long the connection may stay without
    authenticating. The defaults bound nothing: an HTTP request's one
    answer goes whole, and a request needs no deadline.
    """

    max_batch: int
    send_queue: int = 1 << 30
    send_queue_bytes: int = 1 << 62
    auth_deadline: float | None = None


class Exchange:
    """One frame between ``receive`` and ``finish``: its replies so far and
    the requests the adapter is to execute (index in the frame, request)."""

    __slots__ = ("frame", "refused", "replies", "requests")

    def __init__(
        self, frame: rpc.Frame, replies: dict[int, dict[str, Any]], requests: list[tuple[int, rpc.Request]]
    ) -> None:
        self.frame = frame
        self.replies = replies
        self.requests = requests
        self.refused = False  # the core refused the connection's token


def _never() -> bool:
    return False


class Session:
    """One connection's binding, rate limit, outbox and end.

    Inputs: ``receive_text`` / ``receive_binary`` (a frame), ``credential_for``
    and then ``succeeded`` / ``opened`` / ``failed`` (the adapter's call of
    one request), ``finish`` (the frame's answer), ``event`` and
    ``stream_ended`` (the subscription), ``tick`` (the time passes).

    Outputs: ``outbox`` (texts to send in order, then perhaps a ``Close``
    after which nothing more goes), ``abort`` (close now with this, the
    outbox dropped), ``farewell`` (close with this once the requests in
    flight are answered: the adapter then calls ``queue_farewell``), and
    ``closing`` (execute no more frames).

    Guarantees: each frame gets exactly the answer JSON-RPC 2.0 prescribes;
    the outbox holds at most ``send_queue`` messages and ``send_queue_bytes``
    bytes while ``backed_up()`` (asked only beyond those bounds) says the
    transport is not draining, and never more than ``BURST`` times either;
    the first decided end wins, and ending is idempotent.
    """

    __slots__ = (
        "_address",
        "_auth_extended",
        "_backed_up",
        "_hint",
        "_limiter",
        "_limits",
        "_stream_json",
        "_streams_refused",
        "abort",
        "auth_due",
        "binding",
        "close_queued",
        "closing",
        "farewell",
        "outbox",
        "queued_bytes",
    )

    def __init__(
        self,
        limits: SessionLimits,
        *,
        binding: Binding,
        limiter: RateLimiter,
        hint: str,
        now: float,
        stream_json: StreamJson | None = None,
        streams_refused: str | None = None,
        backed_up: Callable[[], bool] = _never,
        address: str = "",
    ) -> None:
        """``hint`` tells an unbound client how to log in; ``streams_refused``,
        when given, refuses server-streaming methods with that advice;
        ``address`` only names the client in the log."""
        self._limits = limits
        self.binding = binding
        self._limiter = limiter
        self._hint = hint
        self._stream_json = stream_json or StreamJson()
        self._streams_refused = streams_refused
        self._backed_up = backed_up
        self._address = address
        self.outbox: deque[str | Close] = deque()
        self.queued_bytes = 0  # UTF-8 bytes of the texts in the outbox
        self.closing = False
        self.close_queued = False  # a Close ends the outbox: queue nothing more
        self.abort: Close | None = None
        self.farewell: Close | None = None
        deadline = limits.auth_deadline
        self.auth_due: float | None = None if deadline is None else now + deadline
        self._auth_extended = False

    # -- frames in -------------------------------------------------------
    def receive_text(self, text: str | bytes, now: float) -> Exchange | None:
        """Parse and admit one frame. Returns the requests to execute, or None
        when the frame is already answered (or the flood closed the session)."""
        frame = rpc.parse(text, max_batch=self._limits.max_batch)
        replies: dict[int, dict[str, Any]] = {}
        admitted: list[tuple[int, rpc.Request]] = []
        limiter = self._limiter
        for index, item in enumerate(frame.items):
            decision = limiter.check(now)
            verdict = decision.verdict
            if verdict is Verdict.ADMIT:
                if isinstance(item, rpc.Request):
                    admitted.append((index, item))
            elif verdict is Verdict.REJECT:
                replies[index] = rpc.error(item.id, rpc.rate_limited(max(decision.retry_after, 1e-3)))
            else:
                self._abort(POLICY_VIOLATION, "flood: too many requests")
                return None
        exchange = Exchange(frame, replies, admitted)
        if not admitted:
            self.finish(exchange)
            return None
        return exchange

    def receive_binary(self, now: float) -> None:
        """A binary frame: counted, and answered with an error (JSON travels as text)."""
        decision = self._limiter.check(now)
        if decision.verdict is Verdict.CLOSE:
            self._abort(POLICY_VIOLATION, "flood: too many requests")
            return
        if decision.verdict is Verdict.REJECT:
            failure = rpc.rate_limited(max(decision.retry_after, 1e-3))
        else:
            failure = RpcError(
                rpc.INVALID_REQUEST, "invalid request: binary frames are not supported; send JSON as text"
            )
        self.send(rpc.encode(rpc.error(None, failure)))

    def credential_for(self, method: Method) -> str | None:
        """The token to call ``method`` with; RpcError when it may not be called here."""
        if self._streams_refused is not None and method.server_streaming:
            raise RpcError(rpc.METHOD_NOT_FOUND, f"{method.name} is a stream; {self._streams_refused}")
        return self.binding.credential_for(method, hint=self._hint)

    def succeeded(self, exchange: Exchange, index: int, request: rpc.Request, result: Any) -> None:
        """The core answered a request that carried the token (or opened a session)."""
        exchange.replies[index] = rpc.result(request.id, result)
        self.auth_due = None  # the core accepted the token

    def opened(self, exchange: Exchange, index: int, request: rpc.Request, result: Mapping[str, Any]) -> None:
        """A method that opens a session succeeded: the connection speaks for it now."""
        self.binding.bind(result)
        self.succeeded(exchange, index, request, result)

    def failed(
        self, exchange: Exchange, index: int, request: rpc.Request, failure: RpcError, credential: str | None
    ) -> None:
        """A request failed; when the core refused the token itself (revoked,
        expired) the connection is over: answered, then closed, so that the
        client logs in again instead of retrying."""
        exchange.replies[index] = rpc.error(request.id, failure)
        if token_refused(failure, credential):
            exchange.refused = True
            self.closing = True  # frames that arrive after a fatal answer are not executed

    def finish(self, exchange: Exchange) -> None:
        """Queue the frame's answer (if one is owed)."""
        text = exchange.frame.response(exchange.replies)
        if text is not None:
            self.send(text)
        if exchange.refused:
            self.close_after_send(CLOSE_UNAUTHENTICATED, "unauthenticated: the session's token was refused")

    def frame_failed(self, failure: RpcError) -> None:
        """An edge bug while handling a frame: tell the client, then close."""
        self.send(rpc.encode(rpc.error(None, failure)))
        self.close_after_send(INTERNAL_ERROR, "internal error")

    # -- the subscription ------------------------------------------------
    def event(self, message: Message) -> bool:
        """The subscription's next event, as a notification. True when the
        event ends the session (its subscription is then over)."""
        if self.closing:
            return False
        self.send(rpc.notification_text(NOTIFICATION, self._stream_json.text(message)))
        if _ends_session(message):
            self.close_after_send(CLOSE_UNAUTHENTICATED, "unauthenticated: the session was revoked")
            return True
        return False

    def stream_ended(self, failure: RpcError | None) -> None:
        """The subscription's stream ended: None when its session ended, else why."""
        if self.closing:
            return
        if failure is None or failure.code == UNAUTHENTICATED:
            # The core ends a session's stream only when the session is over.
            self.close_after_send(CLOSE_UNAUTHENTICATED, "unauthenticated: the session ended")
        else:
            # The core restarted or failed: the client reconnects and resumes
            # from its last seq, which loses nothing.
            self.close_after_send(INTERNAL_ERROR, reason(f"event stream failed: {failure.message}"))

    # -- time --------------------------------------------------------------
    def tick(self, now: float, *, login_pending: bool = False) -> float | None:
        """The time passed: the seconds until the next tick is due, or None.

        A connection not authenticated by its deadline is closed, unless a
        Login is being checked (slow under load, or throttled): that gets
        one more deadline to finish, not a close in its face.
        """
        due = self.auth_due
        if due is None:
            return None
        if self.closing:
            self.auth_due = None
            return None
        if now < due:
            return due - now
        deadline = self._limits.auth_deadline or 0.0
        if login_pending and not self._auth_extended:
            self._auth_extended = True
            self.auth_due = now + deadline
            return deadline
        self.auth_due = None
        log.info("closing a websocket that did not authenticate", extra={"client": self._address})
        # Requests in flight (a slow Login) are answered first, then the close.
        self.close_after_send(CLOSE_UNAUTHENTICATED, reason(f"unauthenticated: no login within {deadline:g} s"))
        return None

    # -- out -----------------------------------------------------------------
    def send(self, text: str) -> None:
        """Queue one text, within the outbox's bounds."""
        if self.close_queued or self.abort is not None:
            return
        limits = self._limits
        outbox = self.outbox
        size = _utf8_size(text)
        queued = len(outbox)
        queued_bytes = self.queued_bytes + size
        if queued >= limits.send_queue or queued_bytes > limits.send_queue_bytes:
            if self._backed_up():
                self._abort(TOO_SLOW, "too slow to read: send queue full; reconnect and resume")
                return
            if queued >= BURST * limits.send_queue or queued_bytes > BURST * limits.send_queue_bytes:
                # A burst bigger than the client may take at once (a long
                # resume): the first send_queue messages (send_queue_bytes)
                # go out, then 4408; the client resumes from there, a step
                # further each time (the first message always goes).
                while len(outbox) > 1 and (
                    len(outbox) > limits.send_queue or self.queued_bytes > limits.send_queue_bytes
                ):
                    dropped = outbox.pop()
                    if isinstance(dropped, str):
                        self.queued_bytes -= _utf8_size(dropped)
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
                outbox.append(Close(TOO_SLOW, "too much at once: reconnect and resume"))
                self.close_queued = self.closing = True
                return
        outbox.append(text)
        self.queued_bytes = queued_bytes

    def next_out(self) -> str | Close | None:
        """The next thing to send, taken from the outbox; after a Close, nothing."""
        outbox = self.outbox
        if not outbox:
            return None
        item = outbox.popleft()
        if isinstance(item, Close):
            self.drop_outbox()
        else:
            self.queued_bytes -= _utf8_size(item)
        return item

    def drop_outbox(self) -> None:
        """The transport is gone: nothing queued will go."""
        self.outbox.clear()
        self.queued_bytes = 0

    def close_after_send(self, code: int, reason: str) -> None:
        """End once the requests in flight are answered and everything queued
        has gone out (``farewell``). A Logout answered while its own
        sessionRevoked event races it, for one, still gets its response."""
        self.closing = True
        if self.abort is None and self.farewell is None and not self.close_queued:
            self.farewell = Close(code, reason)

    def queue_farewell(self) -> None:
        """The requests in flight are answered: the farewell follows what is queued."""
        if self.farewell is not None and self.abort is None and not self.close_queued:
            self.outbox.append(self.farewell)
            self.close_queued = True

    def closed(self) -> None:
        """The transport is gone: nothing more to execute or to time."""
        self.closing = True
        self.auth_due = None

    def _abort(self, code: int, reason: str) -> None:
        """Close now, dropping whatever is queued."""
        self.closing = True
        if self.abort is not None:
            return
        log.info(
            "closing a websocket",
            extra={
                "code": code,
                "reason": reason,
                "client": self._address,
                "queued_bytes": self.queued_bytes,
                "queued": len(self.outbox),
            },
        )
        self.abort = Close(code, reason)
        self.drop_outbox()


def _ends_session(message: Message) -> bool:
    """Whether an event says its session is over (wac.v1.Event.session_revoked)."""
    field = message.DESCRIPTOR.fields_by_name.get("session_revoked")
    return field is not None and message.HasField("session_revoked")


def _utf8_size(text: str) -> int:
    # isascii() is O(1) in CPython (the string knows its kind): nearly every
    # message is ASCII, and only the rest pay for an encode.
    return len(text) if text.isascii() else len(text.encode())


def reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8."""
    encoded = text.encode()
    if len(encoded) <= 123:
        return text
    return encoded[:120].decode(errors="ignore") + "..."
