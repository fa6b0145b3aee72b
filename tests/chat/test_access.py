"""Every refusal of the chat: strangers and unknown ids alike, bad text,
blocks, the system conversation; each with its status and message."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.chat.support import Chat, request_id
from wac.v1 import messages_pb2

NOT_MEMBER = "not a member of this conversation"


async def test_strangers_and_unknown_conversations_are_refused_alike(chat: Chat) -> None:
    alice, mallory = await chat.device("alice"), await chat.device("carol")
    await chat.world.subscriber("bob")
    direct = await alice.send("private", to="bob")
    group = await alice.group("Team", "bob")
    first = await alice.send("team only", conversation_id=group.conversation_id)
    for conversation_id in (direct.conversation_id, group.conversation_id, "unknown-id"):
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.conversation(conversation_id), NOT_MEMBER)
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.history(conversation_id), NOT_MEMBER)
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.send("hi", conversation_id=conversation_id), NOT_MEMBER)
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.mark_read(conversation_id, first.message_id), NOT_MEMBER)
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.add(conversation_id, "carol"), NOT_MEMBER)
    assert [c.conversation_id for c in (await mallory.conversations()).conversations] == []
    # A subscriber lists its own conversations only.
    await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.conversations(subscriber="alice"), "only their own")


async def test_bad_text_and_requests_get_a_precise_error(chat: Chat) -> None:
    alice = await chat.device("alice")
    await chat.device("bob")
    error = await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("x" * 4097, to="bob"), "at most 4096")
    assert "text" in (error.details() or "")
    # Bytes of UTF-8, not characters: 1,366 three-byte characters are 4,098 bytes.
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("€" * 1366, to="bob"), "4098 bytes")
    assert (await alice.send("€" * 1365, to="bob")).text == "€" * 1365
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("", to="bob"), "text")
    request = messages_pb2.SendMessageRequest(recipient="bob", text="no key")
    await fails(
        grpc.StatusCode.INVALID_ARGUMENT, alice.chat.SendMessage(request, metadata=alice.metadata), "request_id"
    )
    request = messages_pb2.SendMessageRequest(text="nowhere", request_id=request_id())
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.chat.SendMessage(request, metadata=alice.metadata), "recipient")
    await fails(grpc.StatusCode.NOT_FOUND, alice.send("hi", to="nobody"), "subscriber 'nobody' does not exist")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("hi", to="alice"), "does not message itself")


async def test_a_blocked_subscriber_reaches_nobody_who_blocks_it(chat: Chat) -> None:
    alice, bob, carol = await chat.device("alice"), await chat.device("bob"), await chat.device("carol")
    group = await alice.group("Team", "bob", "carol")
    for member in (bob, carol):
        await member.expect("conversation_changed")
    before = await alice.send("before", to="bob")
    await bob.expect("message_received")

    assert await bob.block("alice") == ["alice"]
    await fails(
        grpc.StatusCode.PERMISSION_DENIED, alice.send("still there?", to="bob"), "does not accept messages from you"
    )
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        alice.send("still there?", conversation_id=before.conversation_id),
        "does not accept messages from you",
    )
    # In the group: carol has it, bob neither hears nor reads nor counts it.
    await alice.send("to the group", conversation_id=group.conversation_id)
    (told,) = await carol.expect("message_received")
    assert told.message.text == "to the group"
    await bob.quiet()
    assert await bob.texts(group.conversation_id) == []
    assert (await bob.conversation(group.conversation_id)).unread_count == 0
    # His older one-to-one history hides her too.
    assert await bob.texts(before.conversation_id) == []

    assert await bob.unblock("alice") == []
    assert await bob.texts(group.conversation_id) == ["to the group"]
    await alice.send("again", to="bob")
    (told,) = await bob.expect("message_received")
    assert told.message.text == "again"
    await fails(grpc.StatusCode.INVALID_ARGUMENT, bob.block("bob"), "does not block itself")
    await fails(grpc.StatusCode.NOT_FOUND, bob.block("nobody"), "subscriber 'nobody' does not exist")
