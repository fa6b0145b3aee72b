"""PresenceService: translates the protobuf API to the presence handler."""

from __future__ import annotations

import grpc

from core import failures
from core.auth.principal import SubscriberPrincipal, current, subscriber
from core.presence.handler import PresenceHandler, PresenceView
from core.presence.messages import presence_message, status_from_wire
from wac.v1 import presence_pb2, presence_pb2_grpc


def _message(view: PresenceView) -> presence_pb2.Presence:
    return presence_message(view.username, view.display_name, view.state)


def _viewer() -> str | None:
    """The subscriber whose visibility applies; None for a service, whose
    presence.read scope the interceptor has checked."""
    principal = current()
    return principal.username if isinstance(principal, SubscriberPrincipal) else None


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    def __init__(self, presence: PresenceHandler) -> None:
        self._presence = presence

    async def SetPresence(
        self, request: presence_pb2.SetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> presence_pb2.Presence:
        principal = subscriber()
        if not principal.has("presence.publish"):
            raise failures.PermissionDenied("publishing presence needs the presence.publish permission")
        status = status_from_wire("status", request.status)
        view = await self._presence.publish(principal.username, principal.session_id, status, request.note)
        return _message(view)

    async def GetPresence(
        self, request: presence_pb2.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> presence_pb2.Presence:
        return _message(await self._presence.read(_viewer(), request.username))

    async def BatchGetPresence(
        self, request: presence_pb2.BatchGetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> presence_pb2.BatchGetPresenceResponse:
        views = await self._presence.read_many(_viewer(), request.usernames)
        return presence_pb2.BatchGetPresenceResponse(presences=[_message(v) for v in views])
