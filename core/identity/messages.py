"""Translation between the identity handler's values and wac.v1 messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.convert import timestamp
from core.identity import rules
from core.identity.results import Inactive, IssuedSession
from core.identity.store import SubscriberRow
from wac.v1 import events_pb2, identity_pb2

Reason = identity_pb2.VerifyTokenResponse.Reason


@dataclass(frozen=True, slots=True)
class SipGatewayAnnouncement:
    """Where the operator's SIP gateway is, told to every client in its
    Session (Login and RefreshSession) so that it can register there."""

    path: str  # the WebSocket path on the front door the client reached
    domain: str  # the SIP domain
    url: str = ""  # the full URL when the operator sets one, else empty

    def pb(self) -> identity_pb2.SipGateway:
        return identity_pb2.SipGateway(path=self.path, domain=self.domain, url=self.url)


def subscriber_pb(row: SubscriberRow, role_map: Mapping[str, tuple[str, ...]]) -> identity_pb2.Subscriber:
    return identity_pb2.Subscriber(
        username=row.username,
        display_name=row.display_name,
        phone_numbers=row.phone_numbers,
        email=row.email,
        roles=row.roles,
        permissions=sorted(rules.permissions_for(row.roles, role_map)),
        disabled=row.disabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def session_pb(
    session: IssuedSession, subscriber: identity_pb2.Subscriber, sip_gateway: SipGatewayAnnouncement | None
) -> identity_pb2.Session:
    return identity_pb2.Session(
        session_id=session.session_id,
        access_token=session.access_token,
        expire_time=timestamp(session.expire_time),
        refresh_token=session.refresh_token,
        refresh_expire_time=timestamp(session.refresh_expire_time),
        subscriber=subscriber,
        device_name=session.device_name,
        sip_gateway=sip_gateway.pb() if sip_gateway else None,
    )


def reason_pb(inactive: Inactive) -> identity_pb2.VerifyTokenResponse.Reason:
    """The proto Reason of the same name."""
    return Reason.Value(inactive.name)


def session_revoked_event(session_id: str, reason: str) -> events_pb2.Event:
    """The last event of a revoked session's stream."""
    return events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=session_id, reason=reason))
