"""One-to-one messages over gRPC: made by the first message, told to every
device of both members (the sender's others with its request_id), read
receipts, unread counts, idempotent retries, history and catch-up."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.chat.support import Chat, request_id
from wac.v1 import messages_pb2

Conversation = messages_pb2.Conversation


async def test_the_first_message_makes_the_conversation_and_every_device_hears(chat: Chat) -> None:
    alice, laptop = await chat.device("alice"), await chat.device("alice", "laptop")
    bob = await chat.device("bob")
    key = request_id()
    first = await alice.send("hello <b>bob</b>", to="bob", key=key)
    assert (first.sender, first.text, first.seq, first.request_id) == ("alice", "hello <b>bob</b>", 1, key)

    (told,) = await bob.expect("message_received")
    assert told.message.text == "hello <b>bob</b>" and told.message.request_id == ""
    assert told.message.message_id == first.message_id
    assert (told.conversation.type, list(told.conversation.members)) == (Conversation.DIRECT, ["alice", "bob"])
    # alice's other device, with the request_id to match; the sending device knows.
    (mine,) = await laptop.expect("message_received")
    assert mine.message.request_id == key
    await alice.quiet()

    # The same two again: the same conversation, the next seq, either way round.
    reply = await bob.send("hi", to="alice")
    assert (reply.conversation_id, reply.seq) == (first.conversation_id, 2)
    again = await alice.send("how are you?", conversation_id=first.conversation_id)
    assert again.seq == 3

    [listed] = (await bob.conversations()).conversations
    assert (listed.peer, listed.unread_count, listed.last_message.text) == ("alice", 1, "how are you?")
    assert listed.read_seq == 2  # his own message counts as read
    assert await bob.texts(first.conversation_id) == ["hello <b>bob</b>", "hi", "how are you?"]


async def test_read_receipts_and_unread_counts(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob")
    phone = await chat.device("bob", "phone")
    sent = [await alice.send(f"m{n}", to="bob") for n in range(3)]
    conversation_id = sent[0].conversation_id
    assert (await bob.conversation(conversation_id)).unread_count == 3

    await phone.expect("message_received", "message_received", "message_received")
    read = await bob.mark_read(conversation_id, sent[1].message_id)
    assert (read.unread_count, read.read_seq) == (1, 2)
    # A receipt to alice, the badge to bob's other device.
    for device in (alice, phone):
        (told,) = await device.expect("message_read")
        assert (told.username, told.seq, told.message_id) == ("bob", 2, sent[1].message_id)
    # Never backwards, and told once.
    assert (await bob.mark_read(conversation_id, sent[0].message_id)).read_seq == 2
    await alice.quiet()
    await fails(grpc.StatusCode.NOT_FOUND, bob.mark_read(conversation_id, "nope"), "message 'nope' is not in this")


async def test_a_retried_send_answers_the_first_and_tells_nobody_again(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob")
    key = request_id()
    first = await alice.send("once", to="bob", key=key)
    await bob.expect("message_received")
    again = await alice.send("once", to="bob", key=key)
    assert again == first
    await bob.quiet()
    assert await bob.texts(first.conversation_id) == ["once"]
    # Another sender may use the same key: keys are per sender.
    other = await bob.send("mine", to="alice", key=key)
    assert other.message_id != first.message_id and other.seq == 2


async def test_history_pages_newest_first_and_catches_up_oldest_first(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob", connect=False)
    sent = [await alice.send(f"m{n}", to="bob") for n in range(7)]
    conversation_id = sent[0].conversation_id

    seen: list[int] = []
    token = ""
    while True:
        page = await bob.history(conversation_id, page_size=3, page_token=token)
        seen += [m.seq for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]

    # A device that has up to seq 4 catches up on the rest, oldest first.
    caught: list[int] = []
    token = ""
    while True:
        page = await bob.history(conversation_id, after_seq=4, page_size=2, page_token=token)
        caught += [m.seq for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert caught == [5, 6, 7]
    await fails(grpc.StatusCode.INVALID_ARGUMENT, bob.history(conversation_id, page_token="garbage"))
