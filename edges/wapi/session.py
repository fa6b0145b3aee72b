"""Per-connection state as pure code: the session binding and the rate limiter.

Nothing here reads a clock or touches a socket; the adapters pass ``now``
and act on the decisions. The edge keeps no state beyond one connection:
which access token it presents for it, and how fast it may call.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edges.wapi.methods import Method
from edges.wapi.rpc import RpcError

UNAUTHENTICATED = 16


class Binding:
    """The access token a connection presents to the core, if any.

    A connection is bound by ``?access_token=`` at connect time, or by the
    result of a method that opens a session (Login, RefreshSession); the
    latest result wins, so a refresh replaces the token in place.
    """

    __slots__ = ("session_id", "token")

    def __init__(self, token: str | None = None) -> None:
        self.token = token or None
        self.session_id: str | None = None

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
