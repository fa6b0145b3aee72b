"""The authenticated caller of one RPC.

The interceptor resolves it once per call and puts it in a context variable,
so servicers read ``current()`` instead of re-parsing metadata.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from core import failures

# Scopes an API key can carry. "admin" implies all others.
SCOPES = frozenset(
    {
        "identity.verify",
        "subscribers.read",
        "subscribers.write",
        "presence.read",
        "calls.read",
        "calls.write",
        # Operators' view of conferences: list the active ones (read), end
        # one or kick a participant (write).
        "conferences.read",
        "conferences.write",
        # Operators' chat: list a subscriber's conversations (read), send a
        # system message or delete a message (write).
        "messages.read",
        "messages.write",
        "connectors.admin",
        # The SIP gateway: who owns a phone number (GetPhoneNumberOwner).
        "numbers.lookup",
        # The SIP gateway: a message from the trunk to a subscriber's number
        # (MessagesService.ReceiveMessage).
        "messages.deliver",
        # wac's own hops (the WAPI edge, Envoy): opens the internal
        # EdgeStreamService.StreamEvents, and vouches for the client
        # address it forwards (x-wac-hop).
        "hop",
        "admin",
    }
)


@dataclass(frozen=True, slots=True)
class SubscriberPrincipal:
    """A subscriber's device, proven by an access token."""

    username: str
    session_id: str
    permissions: frozenset[str]
    expires_at: float

    def has(self, permission: str) -> bool:
        return permission in self.permissions or "admin" in self.permissions


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """An operator system or gateway, proven by an API key."""

    key_name: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


Principal = SubscriberPrincipal | ServicePrincipal

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("wac_principal", default=None)
_client_address: contextvars.ContextVar[str] = contextvars.ContextVar("wac_client_address", default="")
_credential: contextvars.ContextVar[str] = contextvars.ContextVar("wac_credential", default="")


def set_current(principal: Principal | None, client_address: str, credential: str = "") -> None:
    _current.set(principal)
    _client_address.set(client_address)
    _credential.set(credential)


def current() -> Principal | None:
    """The caller, or None on public methods (Login, RefreshSession)."""
    return _current.get()


def client_address() -> str:
    return _client_address.get()


def credential() -> str:
    """The bearer credential the caller proved itself with ("" for none):
    for a request wac makes on the caller's behalf with the caller's own
    credential (chat's SIP MESSAGE through the gateway). Never logged."""
    return _credential.get()


def subscriber() -> SubscriberPrincipal:
    """The calling subscriber; methods only subscribers may call use this."""
    principal = _current.get()
    if not isinstance(principal, SubscriberPrincipal):
        raise failures.PermissionDenied("this method is for subscribers: use an access token")
    return principal
