"""Translation between the conferences' rules' values and wac.v1 messages.

The rules' enum values are the proto enum value names, so the translation
is by name both ways.
"""

from __future__ import annotations

from core import failures
from core.calls import ice
from core.conferences.rules import Conference, LeaveReason, Media, Participant
from core.convert import timestamp
from wac.v1 import calls_pb2, conferences_pb2, events_pb2

_Proto = conferences_pb2.Conference


def media(value: int) -> Media:
    """A request's media; AUDIO when unset."""
    if value == _Proto.MEDIA_UNSPECIFIED:
        return Media.AUDIO
    try:
        return Media(_Proto.Media.Name(value))
    except ValueError:
        raise failures.Invalid("media", f"unknown media {value}") from None


def participant_pb(participant: Participant) -> conferences_pb2.ConferenceParticipant:
    return conferences_pb2.ConferenceParticipant(
        username=participant.username,
        feed_id=participant.feed_id,
        join_time=timestamp(participant.join_time),
    )


def conference_pb(conference: Conference) -> conferences_pb2.Conference:
    return conferences_pb2.Conference(
        conference_id=conference.conference_id,
        title=conference.title,
        creator=conference.creator,
        media=_Proto.Media.Value(conference.media.value),
        invitees=conference.invitees,
        participants=[participant_pb(p) for p in conference.participants],
        state=_Proto.State.Value(conference.state.value),
        create_time=timestamp(conference.create_time),
        end_time=timestamp(conference.end_time),
        ended_by=conference.ended_by,
    )


def ice_servers_pb(servers: list[ice.IceServer]) -> list[calls_pb2.IceServer]:
    return [calls_pb2.IceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]


# -- events: the log stamps seq and time ---------------------------------
def invited(conference: Conference, creator_display_name: str) -> events_pb2.Event:
    return events_pb2.Event(
        conference_invited=events_pb2.ConferenceInvited(
            conference=conference_pb(conference), creator_display_name=creator_display_name
        )
    )


def participant_joined(conference: Conference, username: str) -> events_pb2.Event:
    return events_pb2.Event(
        conference_participant_joined=events_pb2.ConferenceParticipantJoined(
            conference=conference_pb(conference), username=username
        )
    )


def participant_left(conference: Conference, username: str, reason: LeaveReason) -> events_pb2.Event:
    left = events_pb2.ConferenceParticipantLeft
    return events_pb2.Event(
        conference_participant_left=left(
            conference=conference_pb(conference),
            username=username,
            reason=left.Reason.Value(reason.value),
        )
    )


def ended(conference: Conference) -> events_pb2.Event:
    return events_pb2.Event(conference_ended=events_pb2.ConferenceEnded(conference=conference_pb(conference)))
