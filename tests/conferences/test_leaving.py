"""How participants leave a room other than of their own accord: an
operator's kick, their sessions' revocation, their device going offline;
and presence's IN_CALL while they are in one."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from tests.calls.support import eventually, fails
from tests.conferences.support import Conferences, Member
from tests.support.core import login
from wac.v1 import identity_pb2, identity_pb2_grpc, presence_pb2, presence_pb2_grpc
from wac.v1.events_pb2 import ConferenceParticipantLeft

Reason = ConferenceParticipantLeft.Reason


async def in_room(conferences: Conferences, creator: Member, *members: Member) -> tuple[str, dict[str, int]]:
    """A conference of ``creator`` with ``members`` in its room, every
    event of its making read; its id, and each participant's feed id (and
    room token, under its username with "/token")."""
    made = await creator.open(*(m.username for m in members))
    feeds: dict[str, Any] = {}
    for member in members:
        await member.expect("conference_invited")
    for index, member in enumerate(members):
        joined = await member.join(made.conference_id)
        feeds[member.username], feeds[f"{member.username}/token"] = joined.feed_id, joined.room_token
        for other in (creator, *members[:index]):
            await other.expect("conference_participant_joined")
    return made.conference_id, feeds


async def test_an_operator_kicks_through_the_media_server(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    conference_id, feeds = await in_room(conferences, alice, bob)
    operator = await conferences.operator("conferences.write")
    room = next(iter(conferences.recorded.rooms))

    kicked = await operator.kick(conference_id, "bob")
    assert not kicked.participants and list(kicked.invitees) == ["bob"]
    # His room token first, so that his media-server token gets him back in no more.
    assert conferences.recorded.calls[-2:] == [("revoke", (room, feeds["bob/token"])), ("kick", (room, feeds["bob"]))]
    for member in (alice, bob):
        (told,) = await member.expect("conference_participant_left")
        assert (told.username, told.reason) == ("bob", Reason.KICKED)

    await fails(grpc.StatusCode.FAILED_PRECONDITION, operator.kick(conference_id, "bob"), "'bob' is not in the")
    await fails(grpc.StatusCode.NOT_FOUND, operator.kick("unknown", "bob"), "does not exist")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, operator.kick(conference_id, ""), "username")
    reader = await conferences.operator("conferences.read")
    await fails(grpc.StatusCode.PERMISSION_DENIED, reader.kick(conference_id, "alice"), "conferences.write")
    # Still invited: Bob may come back.
    assert (await bob.join(conference_id)).conference.participants[0].username == "bob"

    # A media server that does not answer: the operator is told, and Bob stays.
    await alice.expect("conference_participant_joined")
    conferences.recorded.unavailable = True
    await fails(grpc.StatusCode.UNAVAILABLE, operator.kick(conference_id, "bob"), "Janus did not answer")
    await alice.quiet()
    await bob.quiet()


async def test_revoked_sessions_leave_every_room_within_a_second(conferences: Conferences) -> None:
    alice, carol = await conferences.member("alice"), await conferences.member("carol")
    bob = await conferences.member("bob")
    first, first_feeds = await in_room(conferences, alice, bob)
    second, second_feeds = await in_room(conferences, carol, bob)
    rooms = {conference_id: room for room, (conference_id, _) in conferences.recorded.rooms.items()}
    admin = await conferences.operator("subscribers.write")
    stub = identity_pb2_grpc.IdentityServiceStub(conferences.world.channel)

    started = asyncio.get_running_loop().time()
    await stub.RevokeSessions(identity_pb2.RevokeSessionsRequest(username="bob"), metadata=admin.metadata)
    kicked = {(rooms[first], first_feeds["bob"]), (rooms[second], second_feeds["bob"])}
    await eventually(lambda: set(conferences.recorded.kicks) == kicked, timeout=1.0)
    revoked = {(rooms[first], first_feeds["bob/token"]), (rooms[second], second_feeds["bob/token"])}
    assert set(conferences.recorded.revoked) == revoked
    assert asyncio.get_running_loop().time() - started < 1.0
    for member in (alice, carol):
        (told,) = await member.expect("conference_participant_left")
        assert (told.username, told.reason) == ("bob", Reason.SESSION_ENDED)
        await member.quiet()
    assert len(conferences.recorded.kicks) == 2  # once each, though two listeners heard of it

    # A new session of Bob's joins again; nothing of the old one's revocation touches it.
    again = await conferences.member("bob", "again")
    await again.join(first)
    await alice.expect("conference_participant_joined")
    await alice.quiet()


async def test_a_device_offline_past_the_grace_period_leaves(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    _, feeds = await in_room(conferences, alice, bob)
    grace = conferences.world.core.config.presence.grace_period

    await bob.disconnect()
    await conferences.advance(grace - 1)
    await alice.quiet()  # a reload within the grace period changes nothing
    await conferences.advance(1)
    (told,) = await alice.expect("conference_participant_left")
    assert (told.username, told.reason) == ("bob", Reason.CONNECTION_LOST)
    assert conferences.recorded.kicks == [(next(iter(conferences.recorded.rooms)), feeds["bob"])]


async def test_logging_out_leaves_the_room(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    await in_room(conferences, alice, bob)
    stub = identity_pb2_grpc.IdentityServiceStub(conferences.world.channel)
    await stub.Logout(identity_pb2.LogoutRequest(), metadata=bob.metadata)
    (told,) = await alice.expect("conference_participant_left")
    assert (told.username, told.reason) == ("bob", Reason.SESSION_ENDED)


async def test_presence_reads_in_call_while_in_a_room(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    reader = await conferences.operator("presence.read")
    presence = presence_pb2_grpc.PresenceServiceStub(conferences.world.channel)

    async def in_call() -> bool:
        request = presence_pb2.GetPresenceRequest(username="bob")
        seen = await presence.GetPresence(request, metadata=reader.metadata)
        return (seen.status, seen.reason) == (presence_pb2.Presence.BUSY, presence_pb2.Presence.IN_CALL)

    async def not_in_call() -> bool:
        return not await in_call()

    made = await alice.open("bob")
    assert await not_in_call()  # invited is not in a call
    await bob.join(made.conference_id)
    await eventually(in_call)
    await bob.leave(made.conference_id)
    await eventually(not_in_call)

    # One mechanism with calls: in a call and a room, Bob is in a call
    # until he left both.
    await bob.join(made.conference_id)
    await eventually(in_call)
    calls_bob = await conferences.world.device("bob", "desk")
    caller = await conferences.world.device("carol")
    call = await caller.create("bob")
    await calls_bob.expect("call_invited")
    await calls_bob.answer(call.call_id)
    await bob.leave(made.conference_id)
    await asyncio.sleep(0.2)
    assert await in_call()
    await caller.hangup(call.call_id)
    await eventually(not_in_call)
    # And ending a conference takes its participants out of the call.
    await bob.join(made.conference_id)
    await eventually(in_call)
    await alice.end(made.conference_id)
    await eventually(not_in_call)


async def test_a_login_elsewhere_does_not_take_a_participant_out(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    await in_room(conferences, alice, bob)
    await login(conferences.world.channel, "bob", device="other")
    await alice.quiet()
    assert conferences.recorded.kicks == []


async def test_after_a_restart_the_devices_that_do_not_come_back_leave(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    conference_id, feeds = await in_room(conferences, alice, bob)
    await alice.join(conference_id)
    await bob.expect("conference_participant_joined")
    await conferences.restart()
    world = conferences.world
    await alice.connect(world.channel, world.core)
    await conferences.advance(world.core.config.presence.grace_period)
    (told,) = await alice.expect("conference_participant_left")
    assert (told.username, told.reason) == ("bob", Reason.CONNECTION_LOST)
    assert (next(iter(conferences.recorded.rooms)), feeds["bob"]) in conferences.recorded.kicks
    [listed] = (await alice.mine()).conferences
    assert [p.username for p in listed.participants] == ["alice"]
