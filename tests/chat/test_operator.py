"""The operator's chat over gRPC (API keys): system messages, a
subscriber's conversations, deleting a message for everyone; each with
its scope."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.chat.support import Chat
from wac.v1 import messages_pb2

Conversation = messages_pb2.Conversation


async def test_a_system_message_reaches_the_subscriber_who_cannot_reply(chat: Chat) -> None:
    bob = await chat.device("bob")
    operator = await chat.operator("messages.write")
    sent = await operator.system("bob", "maintenance at 22:00", key="k1")
    assert (sent.sender, sent.system, sent.text, sent.seq) == ("", True, "maintenance at 22:00", 1)
    (told,) = await bob.expect("message_received")
    assert told.message.system and told.conversation.type == Conversation.SYSTEM
    # A retry with the same key is the same message.
    assert await operator.system("bob", "maintenance at 22:00", key="k1") == sent
    await bob.quiet()
    await fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        bob.send("why?", conversation_id=sent.conversation_id),
        "a system conversation is read only",
    )
    second = await operator.system("bob", "done")
    assert (second.conversation_id, second.seq) == (sent.conversation_id, 2)
    await fails(grpc.StatusCode.NOT_FOUND, operator.system("nobody", "x"), "subscriber 'nobody' does not exist")


async def test_an_operator_lists_a_subscribers_conversations_and_deletes_a_message(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob")
    sent = await alice.send("oops, my password is hunter2", to="bob")
    kept = await alice.send("ignore that", to="bob")
    await bob.expect("message_received", "message_received")
    reader = await chat.operator("messages.read")
    [listed] = (await reader.conversations("bob")).conversations
    assert (listed.conversation_id, listed.peer, listed.unread_count) == (sent.conversation_id, "alice", 2)

    writer = await chat.operator("messages.write")
    await writer.delete(sent.conversation_id, sent.message_id)
    for device in (alice, bob):
        (told,) = await device.expect("message_deleted")
        assert (told.message_id, told.seq) == (sent.message_id, 1)
    assert await bob.texts(sent.conversation_id) == ["ignore that"]
    assert (await bob.conversation(sent.conversation_id)).unread_count == 1
    await fails(grpc.StatusCode.NOT_FOUND, writer.delete(sent.conversation_id, sent.message_id), "does not exist")
    assert kept.seq == 2

    # Each needs its scope; subscribers have none of these.
    await fails(grpc.StatusCode.PERMISSION_DENIED, reader.delete(kept.conversation_id, kept.message_id))
    await fails(grpc.StatusCode.PERMISSION_DENIED, writer.conversations("bob"))
    request = messages_pb2.SendSystemMessageRequest(username="bob", text="x", request_id="r")
    await fails(grpc.StatusCode.PERMISSION_DENIED, alice.chat.SendSystemMessage(request, metadata=alice.metadata))
