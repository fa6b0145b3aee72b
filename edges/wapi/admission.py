"""Who may open a WAPI connection, as pure code: the Origin allow-list and
the per-address connection count; and how many subscriptions the edge asks
the core to attach at once. No I/O; the adapters ask and act.

Both the WebSocket upgrade and the HTTP fallback consult one
``ConnectionSlots``, so an address holds at most ``per_address`` WAPI
connections of either kind at once (open sockets plus HTTP requests being
answered, long polls included).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

Waiter = TypeVar("Waiter")

# Matches any Origin in edge.allowed_origins (a deployment that relies on
# tokens alone and serves browsers from anywhere).
ANY_ORIGIN = "*"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ConnectionSlots:
    """Open connections per client address, at most ``per_address`` each.

    Only addresses with a connection open are kept, so the table is bounded
    by the edge's open connections. Bounds: ``per_address`` >= 1.
    """

    __slots__ = ("_open", "per_address")

    def __init__(self, per_address: int) -> None:
        if per_address < 1:
            raise ValueError("per_address must be at least 1")
        self.per_address = per_address
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Take a slot for ``address``; False when it already holds all of its slots."""
        held = self._open.get(address, 0)
        if held >= self.per_address:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """Give back a slot taken by ``acquire``."""
        held = self._open.get(address, 0)
        if held <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] = held - 1

    def held(self, address: str) -> int:
        return self._open.get(address, 0)


def origin_of(host: str, port: int, scheme: str = "http") -> tuple[str, ...]:
    """The Origins a browser sends for pages served from ``host:port``.

    A loopback listener is reached as 127.0.0.1 and as localhost; a wildcard
    one (0.0.0.0, ::) has no origin of its own: name it in allowed_origins.
    """
    if host in ("", "0.0.0.0", "::", "[::]"):
        return ()
    if host in _LOOPBACK_HOSTS:
        return (f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}", f"{scheme}://[::1]:{port}")
    bracketed = f"[{host}]" if ":" in host else host
    return (f"{scheme}://{bracketed}:{port}",)


class OriginPolicy:
    """Which browser Origins may use the WAPI.

    A request without an Origin header comes from a non-browser client (an
    app, a script): it carries its own credential and is let through; only a
    page's Origin is checked. Origins compare case-insensitively, without a
    trailing slash.
    """

    __slots__ = ("_allowed", "_any")

    def __init__(self, allowed: Iterable[str]) -> None:
        normalized = {_normalize(origin) for origin in allowed}
        self._any = ANY_ORIGIN in normalized
        self._allowed = frozenset(normalized - {ANY_ORIGIN})

    def allows(self, origin: str | None) -> bool:
        if origin is None or self._any:
            return True
        return _normalize(origin) in self._allowed

    @property
    def allowed(self) -> tuple[str, ...]:
        return (ANY_ORIGIN,) if self._any else tuple(sorted(self._allowed))


class Admission:
    """The edge's one gate, shared by the WebSocket and the HTTP adapter.

    ``hop_key`` is what a trusted hop (Envoy) presents in x-wac-hop; only
    then is its X-Forwarded-For the address counted (edges/wapi/forwarded.py).
    """

    __slots__ = ("hop_key", "origins", "slots")

    def __init__(self, slots: ConnectionSlots, origins: OriginPolicy, hop_key: str = "") -> None:
        self.slots = slots
        self.origins = origins
        self.hop_key = hop_key


# Attachments the edge has sent to the core and not yet seen answered. An
# edge restart brings every client back within a second or two (the SDK's
# backoff spreads them only that much): 5,000 attachments at once were as
# many token checks and log reads queued in the core, in front of every
# other request, until the core answered each later than the edge's call
# deadline. Through the window the core works on a few at a time, at the
# rate it answers them, and the rest wait in the edge, where a waiting
# subscription costs nothing but its place in the queue.
ATTACH_WINDOW = 64


class AttachWindow(Generic[Waiter]):
    """At most ``limit`` attachments awaiting the core at once; the others
    wait their turn, first come first served.

    ``enter`` admits at once (True) or queues the waiter; each ``leave`` of
    an admitted attachment hands its place to the waiter it returns, which
    the adapter then wakes. A queued waiter that gives up is ``forget``-ten.
    Bounds: ``limit`` >= 1; the queue holds at most one waiter per
    subscription being made, so it is bounded by the edge's connections.
    """

    __slots__ = ("_queue", "admitted", "limit")

    def __init__(self, limit: int = ATTACH_WINDOW) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.admitted = 0
        self._queue: deque[Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def enter(self, waiter: Waiter) -> bool:
        """True when admitted now; else ``waiter`` is queued until a ``leave`` returns it."""
        if self.admitted < self.limit and not self._queue:
            self.admitted += 1
            return True
        self._queue.append(waiter)
        return False

    def leave(self) -> Waiter | None:
        """An admitted attachment was answered (or given up): the waiter
        admitted in its place, if any (it counts as admitted already)."""
        if self._queue:
            return self._queue.popleft()
        self.admitted = max(0, self.admitted - 1)
        return None

    def forget(self, waiter: Waiter) -> None:
        """A queued waiter gave up before its turn."""
        with contextlib.suppress(ValueError):  # its turn came meanwhile: the adapter leaves instead
            self._queue.remove(waiter)


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def refusal_message(origin: str) -> str:
    # The origin is the client's own text: cut, so that the answer stays small.
    return f"origin not allowed: {origin[:100]!r} is not in edge.allowed_origins"
