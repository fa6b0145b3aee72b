"""The conferences' pure rules, without a server."""

from __future__ import annotations

import itertools

import pytest

from core import failures
from core.conferences import rules
from core.conferences.rules import Conference, Media, Participant, State

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
    ended = rules.end(CONFERENCE, "alice", 200.0)
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
    assert rules.leave(moved, "bob", session_id="web") is moved
    assert rules.leave(moved, "bob").participants == ()


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
    ended = rules.end(joined, "operator", 110.0)
    assert (ended.state, ended.participants, ended.ended_by) == (State.ENDED, (), "operator")
