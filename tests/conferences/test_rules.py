"""The conferences' pure rules, without a server."""

from __future__ import annotations

import itertools

import pytest

from core import failures
from core.conferences import rules
from core.conferences.rules import Conference, EndReason, Media, Participant, State

CONFERENCE = Conference(
    conference_id="k",
    title="t",
    creator="alice",
    media=Media.AUDIO,
    invitees=("bob", "carol"),
    participants=(),
    state=State.ACTIVE,
    room=1,
    create_time=100.0,
    idle_since=100.0,
)


def test_new_invitees_are_deduplicated_checked_and_bounded() -> None:
    assert rules.new_invitees("invitees", ["bob", "alice", "bob", "dave"], creator="alice") == ("bob", "dave")
    assert rules.new_invitees("invitees", ["bob", "erin"], creator="alice", invited=("bob",)) == ("erin",)
    with pytest.raises(failures.Invalid) as caught:
        rules.new_invitees("invitees", ["bob", ""], creator="alice")
    assert caught.value.field == "invitees[1]"
    with pytest.raises(failures.Invalid, match="at most 50 invitees"):
        rules.new_invitees("invitees", ["new"], creator="alice", invited=[f"u{n}" for n in range(rules.MAX_INVITEES)])


def test_strangers_and_unknown_conferences_are_refused_alike() -> None:
    for conference in (CONFERENCE, None):
        with pytest.raises(failures.PermissionDenied, match=rules.NOT_INVITED):
            rules.may_join(conference, "mallory")
        with pytest.raises(failures.PermissionDenied, match=rules.NOT_INVITED):
            rules.may_end(conference, "k", "mallory")
    ended = rules.end(CONFERENCE, "alice", 200.0, EndReason.CREATOR)
    with pytest.raises(failures.PermissionDenied, match=rules.NOT_INVITED):
        rules.may_join(ended, "mallory")
    with pytest.raises(failures.FailedPrecondition, match=rules.HAS_ENDED):
        rules.may_join(ended, "bob")
    with pytest.raises(failures.NotFound):
        rules.may_end(None, "k", None)
    assert rules.may_end(CONFERENCE, "k", None) is CONFERENCE


def test_a_member_is_in_the_room_from_one_device() -> None:
    feeds = itertools.count(1)
    joined = rules.join(CONFERENCE, "bob", "web", 101.0, lambda: next(feeds))
    assert joined.participants == (Participant("bob", "web", 1, 101.0),)
    assert rules.join(joined, "bob", "web", 102.0, lambda: next(feeds)) == joined
    refreshed = rules.join(joined, "bob", "web", 102.5, lambda: next(feeds), "new-room-token")
    assert refreshed.participants == (Participant("bob", "web", 1, 101.0, "new-room-token"),)
    moved = rules.join(joined, "bob", "phone", 103.0, lambda: next(feeds))
    assert moved.participants == (Participant("bob", "phone", 2, 103.0),)
    assert rules.departed(joined, moved) == joined.participants
    assert rules.arrived(joined, moved) == moved.participants
    # A leave of the device that was moved away from changes nothing.
    assert rules.leave(moved, "bob", now=104.0, session_id="web") is moved
    assert rules.leave(moved, "bob", now=104.0).participants == ()


def test_feed_ids_are_unique_in_a_room() -> None:
    draws = iter([5, 5, 6])
    first = rules.join(CONFERENCE, "bob", "web", 101.0, lambda: 5)
    both = rules.join(first, "carol", "web2", 102.0, lambda: next(draws))
    assert [p.feed_id for p in both.participants] == [5, 6]


def test_only_the_creator_invites_and_an_operator_kicks_participants_only() -> None:
    with pytest.raises(failures.PermissionDenied, match="only the conference's creator may invite"):
        rules.invite(CONFERENCE, "bob", ["dave"])
    assert rules.invite(CONFERENCE, "alice", ["dave"]).invitees == ("bob", "carol", "dave")
    with pytest.raises(failures.FailedPrecondition, match="'bob' is not in the conference's room"):
        rules.to_kick(CONFERENCE, "k", "bob")
    joined = rules.join(CONFERENCE, "bob", "web", 101.0, lambda: 9)
    assert rules.to_kick(joined, "k", "bob").feed_id == 9
    ended = rules.end(joined, "operator", 110.0, EndReason.OPERATOR)
    assert (ended.state, ended.participants, ended.ended_by) == (State.ENDED, (), "operator")
    assert ended.end_reason is EndReason.OPERATOR


def test_a_room_empty_for_the_idle_timeout_ends_the_conference() -> None:
    # Nobody came: idle from its creation.
    assert rules.expire(CONFERENCE, 100.0 + 299.0, 300.0) is CONFERENCE
    expired = rules.expire(CONFERENCE, 100.0 + 300.0, 300.0)
    assert (expired.state, expired.ended_by, expired.end_reason) == (State.ENDED, "wac", EndReason.IDLE)
    assert expired.end_time == 400.0
    # Somebody in the room: never idle, however long.
    joined = rules.join(CONFERENCE, "bob", "web", 150.0, lambda: 1)
    assert joined.idle_since is None
    assert rules.expire(joined, 10_000.0, 300.0) is joined
    # The last one out starts the timeout anew; one of two leaving does not.
    both = rules.join(joined, "carol", "web2", 160.0, lambda: 2)
    one_left = rules.leave(both, "bob", now=200.0)
    assert one_left.idle_since is None
    empty = rules.leave(one_left, "carol", now=500.0)
    assert empty.idle_since == 500.0
    assert rules.expire(empty, 799.0, 300.0) is empty
    assert rules.expire(empty, 800.0, 300.0).state is State.ENDED
    # An ended conference stays as it ended.
    ended = rules.end(CONFERENCE, "alice", 200.0, EndReason.CREATOR)
    assert rules.expire(ended, 10_000.0, 300.0) is ended


def test_a_conference_keeps_who_ever_entered_its_room() -> None:
    bob = rules.join(CONFERENCE, "bob", "web", 101.0, lambda: 1)
    carol = rules.join(bob, "carol", "web2", 105.0, lambda: 2)
    out = rules.leave(rules.leave(carol, "bob", now=110.0), "carol", now=111.0)
    again = rules.join(out, "bob", "phone", 120.0, lambda: 3)
    assert (again.attendees, again.first_join_time) == (("bob", "carol"), 101.0)
    assert rules.end(again, "alice", 130.0, EndReason.CREATOR).attendees == ("bob", "carol")
