"""What can go wrong with a connector, typed so callers can tell it apart."""

from __future__ import annotations

from core.failures import Aborted, FailedPrecondition, Invalid, NotFound, Unavailable


class ConfigError(ValueError):
    """A connector section is invalid; the message names the key."""


class FetchError(Exception):
    """A fetch failed. The message is safe to record and show: it never
    holds a password or a token."""


class PermanentFetchError(FetchError):
    """A fetch failed in a way retrying will not mend; the schedule stops
    running the connector until it is set up again."""


class GrantRevoked(PermanentFetchError):
    """The subscriber's Google grant is gone (revoked, expired or the
    password changed): the link is broken until they link again."""

    def __init__(self, username: str, detail: str = "") -> None:
        message = f"the Google grant of {username} was revoked"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.username = username


class AlreadyRunning(Aborted):
    """A run of the connector is under way; SyncConnector answers ABORTED."""

    def __init__(self, name: str) -> None:
        super().__init__(f"connector {name} is already running")
        self.name = name


class UnknownConnector(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no connector named {name}")
        self.name = name


class LinkStateMismatch(Invalid):
    """The callback's state is not one this subscriber started, or it expired:
    a forged or replayed callback. INVALID_ARGUMENT naming the state."""

    def __init__(self) -> None:
        super().__init__("state", "does not match a Google link this subscriber started, or it expired")


class LinkFailed(FailedPrecondition):
    """Google refused the authorization code, or granted no offline access."""


class GoogleUnreachable(Unavailable):
    """Google could not be reached to complete a link; the caller may retry."""
