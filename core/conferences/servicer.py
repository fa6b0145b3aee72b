"""ConferencesService: translates the protobuf API to the conferences
handler. Access rules live in ``rules.py`` and ``handler.py``; this module
reads the caller and converts messages."""

from __future__ import annotations

import grpc

from core.auth.principal import current, subscriber
from core.conferences import messages
from core.conferences.handler import ConferenceHandler
from wac.v1 import conferences_pb2, conferences_pb2_grpc


class ConferencesServicer(conferences_pb2_grpc.ConferencesServiceServicer):
    def __init__(self, handler: ConferenceHandler) -> None:
        self._conferences = handler

    async def CreateConference(
        self, request: conferences_pb2.CreateConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.Conference:
        conference = await self._conferences.create(
            subscriber(), title=request.title, invitees=list(request.invitees), media=messages.media(request.media)
        )
        return messages.conference_pb(conference)

    async def InviteToConference(
        self, request: conferences_pb2.InviteToConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.Conference:
        conference = await self._conferences.invite(subscriber(), request.conference_id, list(request.invitees))
        return messages.conference_pb(conference)

    async def JoinConference(
        self, request: conferences_pb2.JoinConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.JoinConferenceResponse:
        joined = await self._conferences.join(subscriber(), request.conference_id)
        return conferences_pb2.JoinConferenceResponse(
            conference=messages.conference_pb(joined.conference),
            janus_path=joined.janus_path,
            room=joined.conference.room,
            token=joined.token,
            feed_id=joined.participant.feed_id,
            ice_servers=messages.ice_servers_pb(joined.ice_servers),
            room_token=joined.participant.room_token,
        )

    async def LeaveConference(
        self, request: conferences_pb2.LeaveConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.Conference:
        return messages.conference_pb(await self._conferences.leave(subscriber(), request.conference_id))

    async def EndConference(
        self, request: conferences_pb2.EndConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.Conference:
        who = current()
        assert who is not None  # the policy admits no anonymous caller
        return messages.conference_pb(await self._conferences.end(who, request.conference_id))

    async def KickFromConference(
        self, request: conferences_pb2.KickFromConferenceRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.Conference:
        who = current()
        assert who is not None
        return messages.conference_pb(await self._conferences.kick(who, request.conference_id, request.username))

    async def ListConferences(
        self, request: conferences_pb2.ListConferencesRequest, context: grpc.aio.ServicerContext
    ) -> conferences_pb2.ListConferencesResponse:
        who = current()
        assert who is not None
        found, next_token = await self._conferences.list_conferences(
            who, page_size=request.page_size, page_token=request.page_token
        )
        return conferences_pb2.ListConferencesResponse(
            conferences=[messages.conference_pb(c) for c in found], next_page_token=next_token
        )
