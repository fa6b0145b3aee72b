"""IdentityService: translates the protobuf API to the identity handler.

The use cases live in ``handler.py``; this module reads the caller,
converts messages and nothing else.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from core.auth.principal import SubscriberPrincipal, client_address, current
from core.convert import timestamp
from core.identity import messages
from core.identity.handler import IdentityHandler
from core.identity.messages import SipGatewayAnnouncement
from core.identity.results import Inactive, IssuedSession
from core.identity.store import SubscriberRow
from core.paging import decode_token, encode_token, invalid_token, page_size
from wac.v1 import identity_pb2, identity_pb2_grpc

# Converted subscribers kept, by username, while the handler hands out the
# same row (its verification cache keeps one for a second): VerifyToken
# then converts each subscriber once, not on every call.
MAX_CONVERTED = 100_000


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, handler: IdentityHandler, *, sip_gateway: SipGatewayAnnouncement | None = None) -> None:
        self._identity = handler
        self._sip_gateway = sip_gateway
        self._converted: dict[str, tuple[SubscriberRow, identity_pb2.Subscriber]] = {}

    def _subscriber_pb(self, row: SubscriberRow) -> identity_pb2.Subscriber:
        hit = self._converted.get(row.username)
        if hit is not None and hit[0] is row:
            return hit[1]
        message = messages.subscriber_pb(row, self._identity.role_map)
        if len(self._converted) > MAX_CONVERTED:
            self._converted.clear()
        self._converted[row.username] = (row, message)
        return message

    def _session_pb(self, session: IssuedSession) -> identity_pb2.Session:
        return messages.session_pb(session, self._subscriber_pb(session.subscriber), self._sip_gateway)

    # -- sessions -----------------------------------------------------
    async def Login(
        self, request: identity_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Session:
        session = await self._identity.login(request.username, request.password, request.device_name, client_address())
        return self._session_pb(session)

    async def RefreshSession(
        self, request: identity_pb2.RefreshSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Session:
        return self._session_pb(await self._identity.refresh(request.refresh_token))

    async def Logout(self, request: identity_pb2.LogoutRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        principal = current()
        assert isinstance(principal, SubscriberPrincipal)  # the policy admits subscribers only
        await self._identity.logout(principal)
        return empty_pb2.Empty()

    # -- introspection ------------------------------------------------
    async def VerifyToken(
        self, request: identity_pb2.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.VerifyTokenResponse:
        verdict = await self._identity.verify_token(request.token)
        if isinstance(verdict, Inactive):
            return identity_pb2.VerifyTokenResponse(active=False, reason=messages.reason_pb(verdict))
        subscriber = self._subscriber_pb(verdict.subscriber)
        return identity_pb2.VerifyTokenResponse(
            active=True,
            subscriber=subscriber,
            permissions=subscriber.permissions,
            session_id=verdict.principal.session_id,
            expire_time=timestamp(verdict.principal.expires_at),
        )

    async def Authorize(
        self, request: identity_pb2.AuthorizeRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.AuthorizeResponse:
        decision = await self._identity.authorize(request.token, request.action, request.target)
        return identity_pb2.AuthorizeResponse(allowed=decision.allowed, reason=decision.reason)

    async def GetJwks(
        self, request: identity_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Jwks:
        return identity_pb2.Jwks(keys=[identity_pb2.Jwk(**key) for key in self._identity.jwks()])

    # -- subscribers --------------------------------------------------
    async def CreateSubscriber(
        self, request: identity_pb2.CreateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        return self._subscriber_pb(await self._identity.create(request.subscriber))

    async def GetSubscriber(
        self, request: identity_pb2.GetSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        return self._subscriber_pb(await self._identity.get_subscriber(current(), request.username))

    async def ListSubscribers(
        self, request: identity_pb2.ListSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListSubscribersResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token) or ""
        if not isinstance(after, str):
            raise invalid_token()
        rows = await self._identity.list_subscribers(after, size + 1)
        next_token = encode_token(rows[size - 1].username) if len(rows) > size else ""
        return identity_pb2.ListSubscribersResponse(
            subscribers=[self._subscriber_pb(r) for r in rows[:size]], next_page_token=next_token
        )

    async def UpdateSubscriber(
        self, request: identity_pb2.UpdateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        subscriber = request.subscriber
        # An empty mask updates the fields the request sets.
        paths = list(request.update_mask.paths) or [f.name for f, _ in subscriber.ListFields() if f.name != "username"]
        return self._subscriber_pb(await self._identity.update(subscriber, paths))

    async def DeleteSubscriber(
        self, request: identity_pb2.DeleteSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._identity.delete_subscriber(request.username)
        return empty_pb2.Empty()

    async def GetPhoneNumberOwner(
        self, request: identity_pb2.GetPhoneNumberOwnerRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.PhoneNumberOwner:
        number, holder = await self._identity.phone_number_owner(request.phone_number)
        return identity_pb2.PhoneNumberOwner(phone_number=number, subscriber=holder)

    async def RevokeSessions(
        self, request: identity_pb2.RevokeSessionsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RevokeSessionsResponse:
        return identity_pb2.RevokeSessionsResponse(revoked_count=await self._identity.revoke_sessions(request.username))
