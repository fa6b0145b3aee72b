"""Which callers may call which method: one table, checked by the interceptor.

A method is open to subscribers (with an access token), to services holding
one of its scopes (with an API key), or to anyone (public: logging in, and
the public keys that verify tokens).
Finer rules (a subscriber acts only on its own data and calls) live in the
services, which know what "own" means.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import failures
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal


@dataclass(frozen=True, slots=True)
class Rule:
    public: bool = False
    subscribers: bool = False
    scopes: tuple[str, ...] = ()


PUBLIC = Rule(public=True)
SUBSCRIBER = Rule(subscribers=True)


def _services(*scopes: str, subscribers: bool = False) -> Rule:
    return Rule(subscribers=subscribers, scopes=scopes)


RULES: dict[str, Rule] = {
    "/wac.v1.IdentityService/Login": PUBLIC,
    "/wac.v1.IdentityService/RefreshSession": PUBLIC,
    "/wac.v1.IdentityService/Logout": SUBSCRIBER,
    "/wac.v1.IdentityService/VerifyToken": _services("identity.verify"),
    "/wac.v1.IdentityService/Authorize": _services("identity.verify"),
    # Public keys only, public by convention (also /.well-known/jwks.json).
    "/wac.v1.IdentityService/GetJwks": PUBLIC,
    "/wac.v1.IdentityService/CreateSubscriber": _services("subscribers.write"),
    "/wac.v1.IdentityService/GetSubscriber": _services("subscribers.read", subscribers=True),
    "/wac.v1.IdentityService/ListSubscribers": _services("subscribers.read"),
    "/wac.v1.IdentityService/UpdateSubscriber": _services("subscribers.write"),
    "/wac.v1.IdentityService/DeleteSubscriber": _services("subscribers.write"),
    "/wac.v1.IdentityService/RevokeSessions": _services("subscribers.write"),
    "/wac.v1.IdentityService/GetPhoneNumberOwner": _services("numbers.lookup"),
    "/wac.v1.PresenceService/SetPresence": SUBSCRIBER,
    "/wac.v1.PresenceService/GetPresence": _services("presence.read", subscribers=True),
    "/wac.v1.PresenceService/BatchGetPresence": _services("presence.read", subscribers=True),
    "/wac.v1.ContactsService/CreateContact": SUBSCRIBER,
    "/wac.v1.ContactsService/GetContact": SUBSCRIBER,
    "/wac.v1.ContactsService/ListContacts": SUBSCRIBER,
    "/wac.v1.ContactsService/UpdateContact": SUBSCRIBER,
    "/wac.v1.ContactsService/DeleteContact": SUBSCRIBER,
    "/wac.v1.DirectoryService/SearchDirectory": SUBSCRIBER,
    "/wac.v1.DirectoryService/ListConnectors": _services("connectors.admin"),
    "/wac.v1.DirectoryService/SyncConnector": _services("connectors.admin"),
    "/wac.v1.DirectoryService/CreateGoogleLinkAuthorization": SUBSCRIBER,
    "/wac.v1.DirectoryService/CompleteGoogleLink": SUBSCRIBER,
    "/wac.v1.DirectoryService/GetGoogleLink": SUBSCRIBER,
    "/wac.v1.DirectoryService/DeleteGoogleLink": SUBSCRIBER,
    "/wac.v1.CallsService/CreateCall": SUBSCRIBER,
    "/wac.v1.CallsService/AnswerCall": SUBSCRIBER,
    "/wac.v1.CallsService/RejectCall": SUBSCRIBER,
    "/wac.v1.CallsService/HangupCall": _services("calls.write", subscribers=True),
    "/wac.v1.CallsService/SendIceCandidate": SUBSCRIBER,
    "/wac.v1.CallsService/Renegotiate": SUBSCRIBER,
    "/wac.v1.CallsService/GetCall": _services("calls.read", subscribers=True),
    "/wac.v1.CallsService/ListCalls": _services("calls.read", subscribers=True),
    "/wac.v1.CallsService/GetIceServers": SUBSCRIBER,
    "/wac.v1.ConferencesService/CreateConference": SUBSCRIBER,
    "/wac.v1.ConferencesService/InviteToConference": SUBSCRIBER,
    "/wac.v1.ConferencesService/JoinConference": SUBSCRIBER,
    "/wac.v1.ConferencesService/LeaveConference": SUBSCRIBER,
    "/wac.v1.ConferencesService/EndConference": _services("conferences.write", subscribers=True),
    "/wac.v1.ConferencesService/KickFromConference": _services("conferences.write"),
    "/wac.v1.ConferencesService/ListConferences": _services("conferences.read", subscribers=True),
    "/wac.v1.MessagesService/SendMessage": SUBSCRIBER,
    "/wac.v1.MessagesService/CreateConversation": SUBSCRIBER,
    "/wac.v1.MessagesService/GetConversation": SUBSCRIBER,
    "/wac.v1.MessagesService/ListConversations": _services("messages.read", subscribers=True),
    "/wac.v1.MessagesService/UpdateConversation": SUBSCRIBER,
    "/wac.v1.MessagesService/AddConversationMembers": SUBSCRIBER,
    "/wac.v1.MessagesService/RemoveConversationMembers": SUBSCRIBER,
    "/wac.v1.MessagesService/ListMessages": SUBSCRIBER,
    "/wac.v1.MessagesService/MarkRead": SUBSCRIBER,
    "/wac.v1.MessagesService/SetTyping": SUBSCRIBER,
    "/wac.v1.MessagesService/BlockSubscriber": SUBSCRIBER,
    "/wac.v1.MessagesService/UnblockSubscriber": SUBSCRIBER,
    "/wac.v1.MessagesService/ListBlockedSubscribers": SUBSCRIBER,
    "/wac.v1.MessagesService/SendSystemMessage": _services("messages.write"),
    "/wac.v1.MessagesService/DeleteMessage": _services("messages.write"),
    "/wac.v1.MessagesService/ReceiveMessage": _services("messages.deliver"),
    "/wac.v1.EventsService/Subscribe": SUBSCRIBER,
    # The edge's one stream for all its sockets: only wac's own hops may
    # open it (the hop key); each attachment then carries its session's
    # token and is checked as Subscribe.
    "/wac.internal.v1.EdgeStreamService/StreamEvents": _services("hop"),
}

# A method missing from the table is closed to everyone but admins: a new
# RPC must be given a rule on purpose before anyone else can call it.
DEFAULT = Rule()


def rule_for(method: str) -> Rule:
    return RULES.get(method, DEFAULT)


def check(rule: Rule, principal: Principal | None, method: str) -> None:
    """Raise the right status when the principal may not call the method."""
    if rule.public:
        return
    if principal is None:
        raise failures.Unauthenticated("missing credentials: send 'authorization: Bearer <access token or API key>'")
    if isinstance(principal, SubscriberPrincipal):
        if rule.subscribers or "admin" in principal.permissions:
            return
        raise failures.PermissionDenied(f"{method.rsplit('/', 1)[-1]} is not open to subscribers")
    if isinstance(principal, ServicePrincipal):
        if "admin" in principal.scopes or any(s in principal.scopes for s in rule.scopes):
            return
        needed = " or ".join(rule.scopes) or "admin"
        raise failures.PermissionDenied(
            f"API key '{principal.key_name}' lacks the scope {needed} needed for {method.rsplit('/', 1)[-1]}"
        )
