"""A conference from creation to its end, over gRPC: what each member's
devices are told, and what wac asks of the media server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from tests.calls.support import fails
from tests.conferences.support import JANUS_PATH, Conference, Conferences, open_conferences
from wac.v1.events_pb2 import ConferenceParticipantLeft

LEFT, MOVED = ConferenceParticipantLeft.LEFT, ConferenceParticipantLeft.MOVED


async def test_create_invite_join_leave_end(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    carol = await conferences.member("carol")
    bridge = conferences.recorded

    made = await alice.open("bob", "alice", "bob", title="Weekly")
    assert (made.title, made.creator, list(made.invitees), made.state) == (
        "Weekly",
        "alice",
        ["bob"],
        Conference.ACTIVE,
    )
    assert made.media == Conference.AUDIO_VIDEO and not made.participants
    [(room, (conference_id, video))] = bridge.rooms.items()
    assert (conference_id, video) == (made.conference_id, True)
    (invited,) = await bob.expect("conference_invited")
    assert invited.conference == made and invited.creator_display_name == "Alice Liddell"

    # Only the new invitee is told; inviting a member again changes nothing.
    more = await alice.invite(made.conference_id, "carol", "bob")
    assert list(more.invitees) == ["bob", "carol"]
    (invited,) = await carol.expect("conference_invited")
    assert list(invited.conference.invitees) == ["bob", "carol"]
    assert await alice.invite(made.conference_id, "carol") == more
    await bob.quiet()

    # Bob joins: he gets what he needs to reach the room; the others are told.
    joined = await bob.join(made.conference_id)
    assert (joined.janus_path, joined.room) == (JANUS_PATH, room)
    assert bridge.tokens == [(joined.token, bob.expire_time)]
    # Admitted to the room with a room token of his own, which nobody else sees.
    assert bridge.admitted == [(room, joined.room_token)]
    assert joined.room_token not in str(joined.conference)
    assert 0 < joined.feed_id < 2**53
    [participant] = joined.conference.participants
    assert (participant.username, participant.feed_id) == ("bob", joined.feed_id)
    [stun, turn] = joined.ice_servers
    assert list(stun.urls) == ["stun:stun.example.org:3478"]
    assert list(turn.urls) == ["turn:turn.example.org:3478"] and turn.username.endswith(":bob") and turn.credential
    for member in (alice, carol):
        (told,) = await member.expect("conference_participant_joined")
        assert told.username == "bob" and told.conference == joined.conference

    await alice.join(made.conference_id)
    for member in (bob, carol):
        (told,) = await member.expect("conference_participant_joined")
        assert told.username == "alice"
        assert [p.username for p in told.conference.participants] == ["bob", "alice"]

    # Bob leaves: the others are told why, and his feed is out of the room.
    left = await bob.leave(made.conference_id)
    assert [p.username for p in left.participants] == ["alice"]
    # His room token is taken back before his feed is kicked out of the room.
    assert bridge.calls[-2:] == [("revoke", (room, joined.room_token)), ("kick", (room, joined.feed_id))]
    for member in (alice, carol):
        (told,) = await member.expect("conference_participant_left")
        assert (told.username, told.reason) == ("bob", LEFT)
    # Leaving again changes nothing.
    assert await bob.leave(made.conference_id) == left

    # Alice ends it: everyone is told, the room is destroyed, nobody may join.
    ended = await alice.end(made.conference_id)
    assert (ended.state, ended.ended_by, list(ended.participants)) == (Conference.ENDED, "alice", [])
    assert ended.HasField("end_time")
    assert bridge.destroyed == [room]
    for member in (alice, bob, carol):
        (told,) = await member.expect("conference_ended")
        assert told.conference == ended
    await fails(grpc.StatusCode.FAILED_PRECONDITION, bob.join(made.conference_id), "the conference has ended")
    await fails(grpc.StatusCode.FAILED_PRECONDITION, alice.end(made.conference_id), "the conference has ended")
    await fails(grpc.StatusCode.FAILED_PRECONDITION, alice.invite(made.conference_id, "bob"), "has ended")
    for member in (alice, bob, carol):
        await member.quiet()


async def test_joining_again_keeps_the_place_and_another_device_takes_it_over(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    bridge = conferences.recorded
    made = await alice.open("bob", media=Conference.AUDIO)
    assert list(bridge.rooms.values()) == [(made.conference_id, False)]
    await bob.expect("conference_invited")
    first = await bob.join(made.conference_id)
    await alice.expect("conference_participant_joined")

    # The same device again (new tokens): same feed, the old room token
    # taken back, nobody told.
    again = await bob.join(made.conference_id)
    assert again.feed_id == first.feed_id and again.token != first.token
    assert again.room_token != first.room_token and bridge.revoked == [(first.room, first.room_token)]
    await alice.quiet()

    # Another of Bob's devices takes the place over: the first is told,
    # and its feed kicked out of the room.
    phone = await conferences.member("bob", "phone")
    moved = await phone.join(made.conference_id)
    assert moved.feed_id != first.feed_id
    assert [(p.username, p.feed_id) for p in moved.conference.participants] == [("bob", moved.feed_id)]
    assert bridge.kicks == [(first.room, first.feed_id)]
    assert bridge.revoked[-1] == (first.room, again.room_token)
    (told,) = await bob.expect("conference_participant_left")
    assert (told.username, told.reason) == ("bob", MOVED)
    await bob.expect("conference_participant_joined")
    left, joined = await alice.expect("conference_participant_left", "conference_participant_joined")
    assert left.reason == MOVED and joined.conference == moved.conference
    # The device the place moved away from leaving takes nobody out.
    assert (await bob.leave(made.conference_id)).participants == moved.conference.participants
    await alice.quiet()
    await phone.quiet()


async def test_the_creator_may_end_an_empty_conference_and_an_operator_any(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    operator = await conferences.operator("conferences.write")
    made = await alice.open("bob")
    await bob.expect("conference_invited")
    await bob.join(made.conference_id)
    await alice.expect("conference_participant_joined")

    ended = await operator.end(made.conference_id)
    assert ended.ended_by == operator.name and not ended.participants
    for member in (alice, bob):
        await member.expect("conference_ended")
    await fails(grpc.StatusCode.NOT_FOUND, operator.end("unknown"), "conference 'unknown' does not exist")
    await fails(grpc.StatusCode.FAILED_PRECONDITION, operator.end(made.conference_id), "has ended")


async def test_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with open_conferences(tmp_path, {"WAC_CORE_DATABASE_URL": postgres_url}) as conferences:
        assert conferences.world.core.engine.dialect.name == "postgresql"
        alice, bob = await conferences.member("alice"), await conferences.member("bob")
        carol = await conferences.member("carol")
        made = await alice.open("bob", "carol")
        # Joins racing on one conference apply one at a time (its row lock).
        answers = await asyncio.gather(*(m.join(made.conference_id) for m in (alice, bob, carol)))
        assert len({a.feed_id for a in answers}) == 3
        [listed] = (await bob.mine()).conferences
        assert sorted(p.username for p in listed.participants) == ["alice", "bob", "carol"]
        await bob.leave(made.conference_id)
        ended = await alice.end(made.conference_id)
        assert ended.state == Conference.ENDED and not ended.participants
        assert (await alice.mine()).conferences[0] == ended
