"""Conferences' rules: who may do what to a conference, and what each input
makes of it. Pure: a conference and ``now`` in, the conference after the
input (or a refusal) out; the handler stores it and carries out the rest.

- Only the creator and the invitees (the members) may join, and nobody once
  the conference ended. Anyone else is refused with the same message as an
  unknown conference id (``NOT_INVITED``), so that its existence is not
  leaked; every rule checks membership before anything else.
- Only the creator invites. The creator, or an operator, ends.
- A member is in the room from one device at a time: joining again from the
  same device keeps its place and its feed id, joining from another device
  takes the place over with a new feed id (the handler kicks the old feed).
- A conference whose room stays empty for the idle timeout ends by itself
  (``expire``): from its creation if nobody comes, from the last leave
  otherwise. A conference keeps who ever entered its room (its attendees)
  for the call history.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core import checks, failures

NOT_INVITED = "not invited to this conference"
HAS_ENDED = "the conference has ended"
MAX_TITLE = 200
# Invitees of one conference, those invited later included: every member
# may be in the room at once, and each publisher costs the media server a
# stream to every other participant. Bounded like a subscriber's phone
# numbers (a constant), not like calls' rates (configured).
MAX_INVITEES = 50
# Conferences one subscriber may have active at once: each holds a room on
# the media server until it is ended.
MAX_ACTIVE_PER_CREATOR = 10
MAX_USERNAME = 64
MAX_CONFERENCE_ID = 64
# Feed ids are JavaScript-safe integers: the SDK hands them to the media
# server as JSON numbers, which a browser reads as doubles.
FEED_ID_LIMIT = 1 << 53


class State(enum.Enum):
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class Media(enum.Enum):
    AUDIO = "AUDIO"
    AUDIO_VIDEO = "AUDIO_VIDEO"

    @property
    def video(self) -> bool:
        return self is Media.AUDIO_VIDEO


class EndReason(enum.Enum):
    """Why a conference ended."""

    CREATOR = "CREATOR"
    OPERATOR = "OPERATOR"
    # Its room stayed empty for the idle timeout.
    IDLE = "IDLE"


# Who ends a conference that ended by itself (as calls' timeouts do).
IDLE_ENDER = "wac"


class LeaveReason(enum.Enum):
    """Why a participant left the room; the names are the contract's."""

    LEFT = "LEFT"
    KICKED = "KICKED"
    SESSION_ENDED = "SESSION_ENDED"
    CONNECTION_LOST = "CONNECTION_LOST"
    MOVED = "MOVED"


@dataclass(frozen=True, slots=True)
class Participant:
    """A member in the room, from one device."""

    username: str
    session_id: str
    feed_id: int
    join_time: float
    # The media server's room token it was admitted with: it publishes with
    # it, and it is taken back when the participant leaves. A secret of the
    # participant's: never in a message to anyone else.
    room_token: str = ""


@dataclass(frozen=True, slots=True)
class Conference:
    conference_id: str
    title: str
    creator: str
    media: Media
    # In the order invited; the creator is not among them.
    invitees: tuple[str, ...]
    # In the order they joined.
    participants: tuple[Participant, ...]
    state: State
    room: int
    create_time: float
    end_time: float | None = None
    ended_by: str = ""
    end_reason: EndReason | None = None
    # Since when its room has been empty (its creation, then its last
    # leave); None while someone is in it.
    idle_since: float | None = None
    # The members who ever entered its room, in the order they first did,
    # and when the first one did.
    attendees: tuple[str, ...] = ()
    first_join_time: float | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """Everyone the conference's events go to: its creator and invitees."""
        return (self.creator, *self.invitees)

    def is_member(self, username: str) -> bool:
        return username == self.creator or username in self.invitees

    def participant(self, username: str) -> Participant | None:
        return next((p for p in self.participants if p.username == username), None)


# -- request fields ----------------------------------------------------
def title(value: str) -> str:
    checks.require("title", value.strip())
    checks.max_length("title", value, MAX_TITLE)
    return value


def new_invitees(field: str, requested: Sequence[str], *, creator: str, invited: Sequence[str] = ()) -> tuple[str, ...]:
    """The usernames of ``requested`` not yet members, in order, once each;
    INVALID_ARGUMENT naming ``field[i]`` for a malformed one, or ``field``
    when the members would be too many."""
    new: list[str] = []
    for index, username in enumerate(requested):
        checks.require(f"{field}[{index}]", username)
        checks.max_length(f"{field}[{index}]", username, MAX_USERNAME)
        if username != creator and username not in invited and username not in new:
            new.append(username)
    if len(invited) + len(new) > MAX_INVITEES:
        raise failures.Invalid(field, f"a conference has at most {MAX_INVITEES} invitees")
    return tuple(new)


def conference_id(value: str) -> None:
    checks.require("conference_id", value)
    checks.max_length("conference_id", value, MAX_CONFERENCE_ID)


# -- access ------------------------------------------------------------
def member(conference: Conference | None, username: str) -> Conference:
    """The conference, if ``username`` is one of its members; an unknown
    conference gets the same refusal as a stranger's."""
    if conference is None or not conference.is_member(username):
        raise failures.PermissionDenied(NOT_INVITED)
    return conference


def active(conference: Conference) -> Conference:
    if conference.state is State.ENDED:
        raise failures.FailedPrecondition(HAS_ENDED)
    return conference


def found(conference: Conference | None, conference_id: str) -> Conference:
    """For operators, who may know which conferences exist."""
    if conference is None:
        raise failures.NotFound(f"conference '{conference_id}' does not exist")
    return conference


def may_join(conference: Conference | None, username: str) -> Conference:
    return active(member(conference, username))


def may_end(conference: Conference | None, conference_id: str, username: str | None) -> Conference:
    """``username`` None: an operator, who may end any conference."""
    if username is None:
        return active(found(conference, conference_id))
    conference = member(conference, username)
    if username != conference.creator:
        raise failures.PermissionDenied("only the conference's creator or an operator may end it")
    return active(conference)


# -- inputs: the conference before, the conference after ----------------
def invite(conference: Conference | None, username: str, requested: Sequence[str]) -> Conference:
    conference = member(conference, username)
    if username != conference.creator:
        raise failures.PermissionDenied("only the conference's creator may invite")
    active(conference)
    new = new_invitees("invitees", requested, creator=conference.creator, invited=conference.invitees)
    return replace(conference, invitees=conference.invitees + new)


def join(
    conference: Conference | None,
    username: str,
    session_id: str,
    now: float,
    draw_feed_id: Callable[[], int],
    room_token: str = "",
    *,
    max_participants: int | None = None,
) -> Conference:
    """The member in the room from ``session_id`` with ``room_token``: if it
    is there from that device already, its place and feed id kept, else with
    a feed id no other participant has; RESOURCE_EXHAUSTED when the room
    holds ``max_participants`` others (the media server's bound)."""
    conference = may_join(conference, username)
    present = conference.participant(username)
    if present is not None and present.session_id == session_id:
        kept = tuple(replace(p, room_token=room_token) if p is present else p for p in conference.participants)
        return replace(conference, participants=kept)
    if present is None and max_participants is not None and len(conference.participants) >= max_participants:
        raise failures.Exhausted(f"the conference's room is full: at most {max_participants} participants")
    taken = {p.feed_id for p in conference.participants if p.username != username}
    feed_id = draw_feed_id()
    while feed_id in taken:
        feed_id = draw_feed_id()
    others = tuple(p for p in conference.participants if p.username != username)
    joined = Participant(username, session_id, feed_id, now, room_token)
    attendees = conference.attendees if username in conference.attendees else (*conference.attendees, username)
    return replace(
        conference,
        participants=(*others, joined),
        idle_since=None,
        attendees=attendees,
        first_join_time=now if conference.first_join_time is None else conference.first_join_time,
    )


def leave(conference: Conference | None, username: str, *, now: float, session_id: str | None = None) -> Conference:
    """The member out of the room; unchanged if it is not there (or, with
    ``session_id``, not there from that device: another device took over).
    The last one out starts the idle timeout."""
    conference = member(conference, username)
    present = conference.participant(username)
    if present is None or (session_id is not None and present.session_id != session_id):
        return conference
    others = tuple(p for p in conference.participants if p.username != username)
    return replace(conference, participants=others, idle_since=conference.idle_since if others else now)


def to_kick(conference: Conference | None, conference_id: str, username: str) -> Participant:
    """The participant an operator kicks out of an active conference's room."""
    conference = active(found(conference, conference_id))
    participant = conference.participant(username)
    if participant is None:
        raise failures.FailedPrecondition(f"'{username}' is not in the conference's room")
    return participant


def end(conference: Conference, by: str, now: float, reason: EndReason) -> Conference:
    """Ended by ``by``; everyone leaves the room."""
    return replace(
        conference, state=State.ENDED, participants=(), end_time=now, ended_by=by, end_reason=reason, idle_since=None
    )


def expire(conference: Conference, now: float, idle_timeout: float) -> Conference:
    """The conference ended if its room has been empty for ``idle_timeout``
    seconds; else unchanged."""
    if conference.state is not State.ACTIVE or conference.idle_since is None:
        return conference
    if conference.participants or now - conference.idle_since < idle_timeout:
        return conference
    return end(conference, IDLE_ENDER, now, EndReason.IDLE)


# -- what changed ------------------------------------------------------
def departed(before: Conference, after: Conference) -> tuple[Participant, ...]:
    """The participants of ``before`` not in ``after`` from the same device
    (gone, or moved to another device)."""
    kept = {(p.username, p.session_id) for p in after.participants}
    return tuple(p for p in before.participants if (p.username, p.session_id) not in kept)


def arrived(before: Conference, after: Conference) -> tuple[Participant, ...]:
    kept = {(p.username, p.session_id) for p in before.participants}
    return tuple(p for p in after.participants if (p.username, p.session_id) not in kept)
