"""The HTTP adapter, for networks that block WebSockets, and the static files.

The websockets library serves only the GET of an upgrade, so this part runs
on aiohttp, a well-kept asyncio HTTP server already in the lock, on its own
port (``edge.http_listen``):

* ``POST /wapi/http``: a JSON-RPC request or batch in the body, its
  response in the reply (200), or 204 when it held only notifications;
  each POST is a ``Session`` of one frame (``session.py``), the one the
  WebSocket's frames go through, with the per-address rate limiter. The
  token travels as ``Authorization: Bearer``; Login and RefreshSession need
  none and return the session as their result. When the core refuses the
  token itself (revoked, expired) the reply is 401 with the same JSON-RPC
  body: the HTTP form of the WebSocket's close 4401.
* ``GET /wapi/http/events?afterSeq=N``: a long poll on the session's event
  stream, answered ``{"events": [...]}`` as soon as one event arrives (after
  a 20 ms window that gathers the ones right behind it), or empty after
  ``long_poll_seconds``. Each poll attaches to the edge's one shared
  event stream to the core (``event_streams.py``) for its duration, as a
  socket's subscription does: the events are the very ones the WebSocket
  delivers, with the same seq, so a client switches between the two freely.
* ``GET /oauth2/google/callback``: the page that hands Google's answer to
  the app (``oauth2.py``).
* ``GET /sdk/<file>`` from the JS SDK's dist/ and ``GET /`` (and the
  demo's assets) from its demo/, when built.

Errors other than a JSON-RPC response are ``{"error": {"code", "message",
"data"}}``, the JSON-RPC error object, with the gRPC code matching the
HTTP status.

The WAPI paths (``/wapi/http``, ``/wapi/http/events``) admit a browser only
from an allowed Origin (403 otherwise) and count each request being answered
against its address's connections, with the WebSocket's (429 beyond).
Logins and refreshes in one batch run one after another. Every answer
carries ``X-Content-Type-Options``, ``X-Frame-Options`` and
``Referrer-Policy``, and a Content-Security-Policy: the demo's lets it load
its own files and open WebSockets, the rest's lets nothing run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from edges.wapi import forwarded, oauth2, rpc
from edges.wapi.admission import Admission, refusal_message
from edges.wapi.dispatch import Dispatcher, internal_error, login_name
from edges.wapi.methods import StreamJson
from edges.wapi.rpc import RpcError
from edges.wapi.session import (
    CLOSE_UNAUTHENTICATED,
    Binding,
    Exchange,
    RateLimiter,
    Session,
    SessionLimits,
    not_logged_in,
)
from settings import traces

log = logging.getLogger("wac.edge")

RPC_PATH = "/wapi/http"
EVENTS_PATH = "/wapi/http/events"
EVENTS_METHOD = "EventsService.Subscribe"

# After the first event of a poll, wait this long for the ones right behind
# it (a call's ringing and answer, a burst of presence), so that a burst
# costs one round trip instead of one per event.
GATHER_WINDOW = 0.02
MAX_EVENTS_PER_POLL = 500
# Per-address rate limiters kept before idle ones are forgotten.
MAX_LIMITERS = 10_000

HINT = "send 'Authorization: Bearer <access token>' (IdentityService.Login returns one)"
STREAMS_REFUSED = f"over HTTP, long-poll GET {EVENTS_PATH}?afterSeq=N"
# afterSeq is an int64 on the wire.
MAX_SEQ = (1 << 63) - 1

# The demo's policy: its own scripts, styles and files, WebSockets to any
# host (the WAPI may be on another port than the page), the empty data:
# favicon, and the one inline handler of index.html (the "SDK did not load"
# banner), by its hash. tests/wapi/test_abuse.py checks these against
# index.html's handlers.
DEMO_INLINE_HANDLERS = ("document.getElementById('boot-error').hidden = false",)


def csp_hash(code: str) -> str:
    """A CSP source for one inline script or handler."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"


DEMO_CSP = (
    "default-src 'self'; "
    f"script-src 'self' 'unsafe-hashes' {' '.join(map(csp_hash, DEMO_INLINE_HANDLERS))}; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Everything else (the SDK, JSON answers) runs nothing and loads nothing.
LOCKED_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

# google.rpc.Code's own HTTP mapping, both ways.
_HTTP_FOR_CODE = {
    1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
_CODE_FOR_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 413: 8, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_message_bytes: int
    max_batch: int
    rate_per_second: float
    rate_burst: int
    long_poll_seconds: float
    # Seconds a request's body may take to arrive (its headers are timed by
    # aiohttp's keep-alive timer, set to the same value in runner()).
    header_timeout: float = 10.0
    # Answered long polls and closing sockets get this long on shutdown.
    shutdown_timeout: float = 2.0


def json_error(status: int, code: int, message: str, data: dict[str, Any] | None = None) -> web.Response:
    body = RpcError(code, message, data).to_json()
    return web.json_response({"error": body}, status=status, dumps=rpc.encode)


def _failed(failure: RpcError) -> web.Response:
    """A core's refusal as the HTTP status of its gRPC code."""
    return json_error(_HTTP_FOR_CODE.get(failure.code, 500), failure.code, failure.message, dict(failure.data or {}))


def bearer(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def client_address(request: web.Request, hop_key: str) -> str:
    """The browser's address: forwarded by a trusted hop (Envoy), else the peer's."""
    return forwarded.client_address(request.remote or "", request.headers, hop_key)


class HttpEdge:
    """The aiohttp application of the edge. ``stop_polls`` answers held polls at once."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        limits: HttpLimits,
        gate: Admission,
        *,
        sdk_dir: Path,
        demo_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dispatcher = dispatcher
        self._limits = limits
        # Long polls held now: read by a metrics scrape.
        self.polls = 0
        self._gate = gate
        self._sdk_dir = sdk_dir
        self._demo_dir = demo_dir
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}
        # A request is a session of one frame: its answer is the body, with
        # no queue to bound and no deadline to log in by.
        self._session_limits = SessionLimits(max_batch=limits.max_batch)
        self._stopping: asyncio.Future[None] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._limits.max_message_bytes, middlewares=[self._errors, self._admit])
        app.on_response_prepare.append(_security_headers)
        app.router.add_post(RPC_PATH, self._rpc)
        app.router.add_get(EVENTS_PATH, self._events)
        app.router.add_get(oauth2.GOOGLE_CALLBACK_PATH, oauth2.google_callback)
        app.router.add_get("/sdk/{name:.+}", self._sdk)
        app.router.add_get("/", self._demo)
        app.router.add_get("/{path:.+}", self._demo)
        return app

    def runner(self) -> web.AppRunner:
        """The application's runner, with the edge's timeouts; not set up."""
        return web.AppRunner(
            self.app(),
            access_log=None,
            shutdown_timeout=self._limits.shutdown_timeout,
            # aiohttp's keep-alive timer runs from a connection's opening (and
            # from each answer) until a whole request has arrived, and partial
            # headers do not reset it: it is the header timeout that stops a
            # slowloris, and it also closes idle keep-alive connections.
            keepalive_timeout=self._limits.header_timeout,
        )

    def stop_polls(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
        if not self._stopping.done():
            self._stopping.set_result(None)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error(
                413, 8, f"request body too large: at most {self._limits.max_message_bytes} bytes are allowed"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_error(exc.status, _CODE_FOR_HTTP.get(exc.status, 2), exc.reason.lower())
        except RpcError as exc:  # a request the edge could not read
            return json_error(400, 3, exc.message, dict(exc.data or {}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ref = secrets.token_hex(4)
            log.error("internal error in %s %s (ref %s)", request.method, request.path, ref, exc_info=exc)
            return json_error(500, 13, f"internal error (ref {ref}); the operator's log has the details")

    @web.middleware
    async def _admit(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The WAPI's requests: an allowed Origin (403), and a slot of the address (429)."""
        if request.path not in _WAPI_PATHS:
            return await handler(request)
        origin = request.headers.get("Origin")
        if not self._gate.origins.allows(origin):
            return json_error(403, 7, refusal_message(origin or ""))
        address = client_address(request, self._gate.hop_key)
        slots = self._gate.slots
        if not slots.acquire(address):
            return json_error(429, 8, f"too many connections from your address: at most {slots.per_address} at once")
        try:
            return await handler(request)
        finally:
            slots.release(address)

    # -- JSON-RPC over POST --------------------------------------------
    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        try:
            # A body that trickles in holds a connection slot: bounded like headers.
            async with asyncio.timeout(self._limits.header_timeout):
                body = await request.read()
        except TimeoutError:
            late = json_error(408, 4, f"request body not received within {self._limits.header_timeout:g} s")
            late.force_close()
            return late
        address = client_address(request, self._gate.hop_key)
        now = self._clock()
        session = Session(
            self._session_limits,
            binding=Binding(bearer(request)),
            limiter=self._limiter(address),
            hint=HINT,
            now=now,
            stream_json=self._dispatcher.stream_json,
            streams_refused=STREAMS_REFUSED,
            address=address,
        )
        exchange = session.receive_text(body, now)
        if exchange is not None:
            # The HTTP request's trace (Envoy's span, or the client's), for
            # the requests of the body that do not name their own.
            traceparent = request.headers.get(traces.TRACEPARENT, "")
            requests = exchange.requests
            if len(requests) == 1:
                index, item = requests[0]
                await self._execute(session, exchange, index, item, address, None, traceparent)
            else:
                # Logins and refreshes of the batch take turns on this lock, in order.
                turns = asyncio.Lock()
                await asyncio.gather(
                    *(
                        self._execute(session, exchange, index, item, address, turns, traceparent)
                        for index, item in requests
                    )
                )
            session.finish(exchange)
        text = session.next_out()
        if text is None:
            return web.Response(status=204)
        assert isinstance(text, str)  # an answer is never cut short: the outbox is unbounded here
        # The WebSocket's close 4401 (the core refused the token itself) is a 401 here.
        farewell = session.farewell
        status = 401 if farewell is not None and farewell.code == CLOSE_UNAUTHENTICATED else 200
        return web.Response(status=status, text=text, content_type="application/json")

    async def _execute(
        self,
        session: Session,
        exchange: Exchange,
        index: int,
        request: rpc.Request,
        address: str,
        turns: asyncio.Lock | None,
        traceparent: str,
    ) -> None:
        try:
            method, message = self._dispatcher.resolve(request)
            credential = session.credential_for(method)
        except RpcError as failure:
            self._dispatcher.refused(request, failure)
            session.failed(exchange, index, request, failure, None)
            return
        except Exception as exc:
            session.failed(exchange, index, request, internal_error(request.method, exc), None)
            return
        # Logins and refreshes of one batch, one after another: the core's
        # throttle counts each failure before the next attempt is checked.
        turn = turns if method.opens_session and turns is not None else contextlib.nullcontext()
        try:
            async with turn:
                result = await self._dispatcher.call(
                    method,
                    message,
                    credential,
                    address,
                    traceparent=request.traceparent or traceparent,
                    # Over HTTP the edge knows a subscriber's name only from a Login.
                    subscriber=login_name(message) if method.opens_session else "",
                )
            # Not bound to the session it may open: over HTTP every request
            # brings its own token.
            session.succeeded(exchange, index, request, result)
        except RpcError as failure:
            session.failed(exchange, index, request, failure, credential)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            session.failed(exchange, index, request, internal_error(request.method, exc), None)

    def _limiter(self, address: str) -> RateLimiter:
        limiter = self._limiters.get(address)
        if limiter is None:
            if len(self._limiters) >= MAX_LIMITERS:
                # Forgetting a limiter hands its address a full bucket: a
                # bounded table matters more than an exact count under churn.
                self._limiters.clear()
            limiter = RateLimiter(
                rate=self._limits.rate_per_second,
                burst=self._limits.rate_burst,
                # An HTTP client has no socket to close; it is only refused.
                flood_after=1 << 30,
                now=self._clock(),
            )
            self._limiters[address] = limiter
        return limiter

    # -- long-polled events --------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        unknown = set(query) - {"afterSeq", "after_seq"}
        if unknown:
            names = ", ".join(sorted(unknown))
            return json_error(400, 3, f"unknown query parameter(s): {names}; only afterSeq is accepted")
        after = query.get("afterSeq", query.get("after_seq", "0"))
        # isdigit() alone admits "²" and other Unicode digits.
        if not (after.isascii() and after.isdigit()) or len(after) > 19 or int(after) > MAX_SEQ:
            return json_error(400, 3, f"afterSeq must be an integer from 0 to {MAX_SEQ}, got {after[:40]!r}")
        token = bearer(request)
        if token is None:
            error = not_logged_in(HINT)
            return json_error(401, error.code, error.message, dict(error.data or {}))
        events = self._dispatcher.events
        poll = _Poll(self._dispatcher.stream_json)
        try:
            key = await events.subscribe(token, int(after), client_address(request, self._gate.hop_key), poll)
        except RpcError as failure:
            return _failed(failure)
        self.polls += 1
        try:
            await self._hold(poll)
        finally:
            self.polls -= 1
            events.unsubscribe(key)
        if poll.failure is not None and not poll.texts:
            return _failed(poll.failure)
        # Each event's JSON is the text the sockets share (StreamJson), joined as is.
        return web.Response(text=f'{{"events":[{",".join(poll.texts)}]}}', content_type="application/json")

    async def _hold(self, poll: _Poll) -> None:
        """Until the first event (or the poll time, or the edge stopping), then the gather window."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
        await asyncio.wait(
            {poll.first, self._stopping}, timeout=self._limits.long_poll_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if poll.texts and not poll.full.done():
            await asyncio.wait({poll.full}, timeout=GATHER_WINDOW)

    # -- static files --------------------------------------------------
    async def _sdk(self, request: web.Request) -> web.StreamResponse:
        return self._file(self._sdk_dir, request.match_info["name"], "the JS SDK", "npm run build")

    async def _demo(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "") or "index.html"
        if path == "wapi" or path.startswith(("wapi/", "sapi/")):
            return json_error(404, 5, f"no such path: /{path}")
        response = self._file(self._demo_dir, path, "the demo", "npm run build")
        response.headers["Content-Security-Policy"] = DEMO_CSP
        return response

    @staticmethod
    def _file(root: Path, relative: str, what: str, build: str) -> web.StreamResponse:
        if not root.is_dir():
            return json_error(404, 5, f"{what} is not built: run `{build}` in clients/js ({root} is missing)")
        if not relative.isprintable() or not _utf8(relative):
            # NUL, control characters, or bytes that were not UTF-8
            # (aiohttp keeps them as surrogates): no file has such a name.
            return json_error(404, 5, f"no such file in {what}")
        base = root.resolve()
        target = (base / relative).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return json_error(404, 5, f"no such file in {what}: {relative[:200]}")
        return web.FileResponse(target)


class _Poll:
    """One long poll's sink on the shared event stream (edges/wapi/event_streams.py).

    Keeps the JSON of up to MAX_EVENTS_PER_POLL events; what follows is
    dropped, and the next poll resumes after the last seq kept. ``first``
    resolves at the first event or the end, ``full`` when no more will be
    kept.
    """

    __slots__ = ("failure", "first", "full", "json", "texts")

    def __init__(self, stream_json: StreamJson) -> None:
        loop = asyncio.get_running_loop()
        self.json = stream_json
        self.texts: list[str] = []
        self.failure: RpcError | None = None
        self.first: asyncio.Future[None] = loop.create_future()
        self.full: asyncio.Future[None] = loop.create_future()

    def event(self, message: Message) -> None:
        if self.full.done():
            return
        self.texts.append(self.json.text(message))
        if not self.first.done():
            self.first.set_result(None)
        if len(self.texts) >= MAX_EVENTS_PER_POLL:
            self.full.set_result(None)

    def ended(self, failure: RpcError | None) -> None:
        self.failure = failure
        for future in (self.first, self.full):
            if not future.done():
                future.set_result(None)


_WAPI_PATHS = frozenset({RPC_PATH, EVENTS_PATH})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no sniffing, no framing, no referrer; a page with its
    own policy (the demo, the OAuth2 callback) keeps it, the rest runs nothing."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault("Content-Security-Policy", LOCKED_CSP)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
