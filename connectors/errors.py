"""What can go wrong with a connector, typed so callers can tell it apart.

The failures of a fetch, which the core's runner tells apart, are the
core's (``core.directory.connector``); these are the adapters' own."""

from __future__ import annotations

from core.failures import FailedPrecondition, Invalid, Unavailable


class LinkStateMismatch(Invalid):
    """The callback's state is not one this subscriber started, or it expired:
    a forged or replayed callback. INVALID_ARGUMENT naming the state."""

    def __init__(self) -> None:
        super().__init__("state", "does not match a Google link this subscriber started, or it expired")


class LinkFailed(FailedPrecondition):
    """Google refused the authorization code, or granted no offline access."""


class GoogleUnreachable(Unavailable):
    """Google could not be reached to complete a link; the caller may retry."""
