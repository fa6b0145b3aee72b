"""Groups over gRPC: made by their owner, renamed and grown by it, left by
their members; every member told of each change, those removed too."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.chat.support import Chat
from wac.v1 import messages_pb2

Conversation = messages_pb2.Conversation


async def test_a_group_from_creation_to_leaving(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob")
    carol, vic = await chat.device("carol"), await chat.device("vic")
    made = await alice.group("Team", "bob", "carol", "bob")
    assert (made.type, made.title, made.owner, list(made.members)) == (
        Conversation.GROUP,
        "Team",
        "alice",
        ["alice", "bob", "carol"],
    )
    for member in (bob, carol):
        (told,) = await member.expect("conversation_changed")
        assert list(told.added) == ["alice", "bob", "carol"] and told.conversation.title == "Team"
    group_id = made.conversation_id

    first = await bob.send("hello team", conversation_id=group_id)
    for member in (alice, carol):
        (told,) = await member.expect("message_received")
        assert (told.message.sender, told.message.text) == ("bob", "hello team")

    # Only the owner renames and adds.
    await fails(grpc.StatusCode.PERMISSION_DENIED, bob.rename(group_id, "Mine"), "only the group's owner")
    await fails(grpc.StatusCode.PERMISSION_DENIED, bob.add(group_id, "vic"), "only the group's owner")
    renamed = await alice.rename(group_id, "Team A")
    assert renamed.title == "Team A"
    grown = await alice.add(group_id, "vic")
    assert list(grown.members) == ["alice", "bob", "carol", "vic"]
    for member in (bob, carol):
        first_change, second_change = await member.expect("conversation_changed", "conversation_changed")
        assert first_change.conversation.title == "Team A" and list(second_change.added) == ["vic"]
    (told,) = await vic.expect("conversation_changed")
    assert list(told.added) == ["vic"]
    # A new member reads the group's messages from the start.
    assert await vic.texts(group_id) == ["hello team"]
    assert (await vic.conversation(group_id)).unread_count == 1

    # carol leaves; bob may not remove others; the owner may.
    await fails(grpc.StatusCode.PERMISSION_DENIED, bob.remove(group_id, "vic"), "only the group's owner")
    await carol.remove(group_id, "carol")
    for member in (alice, bob, vic):
        (told,) = await member.expect("conversation_changed")
        assert list(told.removed) == ["carol"] and "carol" not in told.conversation.members
    # (Her own device made the change; her other devices would be told.)
    await fails(grpc.StatusCode.PERMISSION_DENIED, carol.history(group_id), "not a member of this conversation")
    await fails(grpc.StatusCode.PERMISSION_DENIED, carol.send("back?", conversation_id=group_id), "not a member")
    await bob.send("bye carol", conversation_id=group_id)
    await carol.quiet()

    # The owner leaving hands the group on, to the member who joined after it.
    left = await alice.remove(group_id, "alice")
    assert left.conversation_id == group_id
    now = await bob.conversation(group_id)
    assert (now.owner, list(now.members)) == ("bob", ["bob", "vic"])
    assert first.seq == 1


async def test_group_requests_are_checked(chat: Chat) -> None:
    alice = await chat.device("alice")
    for username in ("bob", "carol"):
        await chat.world.subscriber(username)
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.group("", "bob"), "title")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.group("x" * 201, "bob"), "at most 200")
    error = await fails(grpc.StatusCode.NOT_FOUND, alice.group("t", "bob", "nobody"), "subscriber 'nobody'")
    assert "members[1]" in (error.details() or "")
    direct = await alice.send("hi", to="bob")
    await fails(grpc.StatusCode.FAILED_PRECONDITION, alice.add(direct.conversation_id, "carol"), "only a group has")
