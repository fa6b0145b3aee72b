"""What the identity handler's use cases return, before any conversion to
the API's messages (``messages.py``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.auth.principal import SubscriberPrincipal
from core.identity.store import SubscriberRow


class Inactive(enum.Enum):
    """Why an access token is not active: the names are the API's
    VerifyTokenResponse.Reason values."""

    MALFORMED = "the access token is malformed"
    INVALID_SIGNATURE = "the access token's signature is invalid"
    EXPIRED = "the access token has expired; refresh the session"
    REVOKED = "the session was revoked; log in again"
    DISABLED = "the subscriber is disabled"

    @property
    def message(self) -> str:
        """What an RPC refused for this reason says."""
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Verified:
    """An active access token: its caller and the subscriber behind it."""

    principal: SubscriberPrincipal
    subscriber: SubscriberRow


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A session as Login and RefreshSession hand it out."""

    session_id: str
    access_token: str
    expire_time: float
    refresh_token: str
    refresh_expire_time: float
    subscriber: SubscriberRow
    device_name: str
