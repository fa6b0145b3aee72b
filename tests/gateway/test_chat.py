"""Chat through the real gateway: a message to a number goes out as a SIP
MESSAGE (RFC 3428) with the sender's own token, which Kamailio checks as it
checks a call's (message.pstn), and is kept once the trunk took it; a SIP
MESSAGE from the trunk to a subscriber's number lands in that subscriber's
conversation with the sender. The trunk is a UDP socket on trunk_uri."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.calls.support import fails
from tests.chat.support import Chatter, request_id
from tests.gateway.conftest import Gateway
from tests.sapi.support import online
from tests.support.gateway import Trunk
from tests.support.timing import seconds
from wac.v1 import messages_pb2

NUMBER = "+34911222333"
CARRIER = "+34911000000"


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        yield channel


async def chatter(gateway: Gateway, channel: grpc.aio.Channel, username: str) -> Chatter:
    return await online(gateway.stack, channel, username, Chatter)


async def test_a_message_to_a_number_goes_out_as_sip_message_and_is_kept(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    alice = await chatter(gateway, channel, "alice")  # role pstn: message.pstn
    laptop = await chatter(gateway, channel, "alice")
    trunk = Trunk(gateway)
    try:
        key = request_id()
        sending = asyncio.ensure_future(alice.send("hola, ¿qué tal? <b>", to="+34 911 222 333", key=key))
        delivered = await asyncio.to_thread(trunk.take, "202 Accepted")
        sent = await sending

        assert delivered.startswith(f"MESSAGE sip:{NUMBER}@127.0.0.1:{gateway.trunk_port} SIP/2.0"), delivered
        assert delivered.endswith("hola, ¿qué tal? <b>")
        assert "From: <sip:alice@127.0.0.1>" in delivered
        # The token did its work at the gateway and went no further.
        assert "authorization" not in delivered.lower() and alice.token.split(".")[2] not in delivered

        assert (sent.sender, sent.text, sent.seq, sent.request_id) == ("alice", "hola, ¿qué tal? <b>", 1, key)
        conversation = await alice.conversation(sent.conversation_id)
        assert (conversation.type, conversation.peer) == (messages_pb2.Conversation.DIRECT, f"tel:{NUMBER}")
        assert list(conversation.members) == ["alice", f"tel:{NUMBER}"]
        (told,) = await laptop.expect("message_received")
        assert told.message.request_id == key  # her other device has it too

        # The same key again: the message it made, and nothing to the trunk.
        again = await alice.send("hola, ¿qué tal? <b>", to=f"tel:{NUMBER}", key=key)
        assert again == sent
        # The next one, by the conversation's id, goes out the same way.
        sending = asyncio.ensure_future(alice.send("¿sigues ahí?", conversation_id=sent.conversation_id))
        second = await asyncio.to_thread(trunk.take, "200 OK")
        assert second.endswith("¿sigues ahí?") and "Call-ID" in second
        assert (await sending).seq == 2
        assert await alice.texts(sent.conversation_id) == ["hola, ¿qué tal? <b>", "¿sigues ahí?"]
    finally:
        trunk.close()


async def test_the_gateways_and_the_trunks_refusals_are_the_sends_errors(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    alice, bob = await chatter(gateway, channel, "alice"), await chatter(gateway, channel, "bob")
    # bob has no message.pstn: the gateway asks wac and says no; nothing kept.
    await fails(grpc.StatusCode.PERMISSION_DENIED, bob.send("hi", to=NUMBER), "403 Forbidden: no message.pstn")
    assert (await bob.conversations()).conversations == []
    # Another domain: the gateway relays to nobody else's.
    await fails(grpc.StatusCode.PERMISSION_DENIED, alice.send("hi", to="sip:ann@example.com"), "403")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("hi", to="+0 911"), "is not an E.164 number")
    long_uri = "sip:" + "a" * 50 + "@example.com"  # a party's URI is kept in 64 characters
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.send("hi", to=long_uri), "at most 64")

    trunk = Trunk(gateway)
    try:
        sending = asyncio.ensure_future(alice.send("anyone?", to=NUMBER))
        await asyncio.to_thread(trunk.take, "404 Not Found")
        await fails(grpc.StatusCode.NOT_FOUND, sending, "the gateway answered 404 Not Found")
    finally:
        trunk.close()
    assert (await alice.conversations()).conversations == []

    # A sip: URI of the gateway's own domain is the subscriber.
    direct = await alice.send("hi bob", to="sip:bob@127.0.0.1")
    (told,) = await bob.expect("message_received")
    assert (told.message.message_id, told.message.sender) == (direct.message_id, "alice")


async def test_a_message_from_the_trunk_reaches_the_numbers_holder_once(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    alice = await chatter(gateway, channel, "alice")  # holds +34600111001
    trunk = Trunk(gateway)
    try:
        call_id = uuid.uuid4().hex
        text = "Your code is 1234 & <that's it>"
        answer = await asyncio.to_thread(trunk.message, "+34600111001", text.encode(), call_id=call_id)
        assert answer.startswith("SIP/2.0 200 "), answer
        (told,) = await alice.expect("message_received")
        assert (told.message.sender, told.message.text) == (f"tel:{CARRIER}", text)
        assert told.conversation.type == messages_pb2.Conversation.DIRECT
        assert set(told.conversation.members) == {"alice", f"tel:{CARRIER}"}
        # The same request again (a retransmission after a lost 200): kept once.
        again = await asyncio.to_thread(trunk.message, "+34600111001", text.encode(), call_id=call_id)
        assert again.startswith("SIP/2.0 200 "), again
        await alice.quiet()
        [conversation] = (await alice.conversations()).conversations
        assert (conversation.peer, conversation.unread_count) == (f"tel:{CARRIER}", 1)
        assert await alice.texts(conversation.conversation_id) == [text]

        # The carrier's national form of the same number: the same party.
        national = await asyncio.to_thread(
            trunk.message, "+34600111001", b"national", call_id=uuid.uuid4().hex, sender="911000000"
        )
        assert national.startswith("SIP/2.0 200 "), national
        (told,) = await alice.expect("message_received")
        assert (told.message.sender, told.message.conversation_id) == (f"tel:{CARRIER}", conversation.conversation_id)

        # Her reply in that conversation goes back to the trunk.
        sending = asyncio.ensure_future(alice.send("thanks", conversation_id=conversation.conversation_id))
        back = await asyncio.to_thread(trunk.take, "200 OK")
        assert back.startswith(f"MESSAGE sip:{CARRIER}@127.0.0.1:{gateway.trunk_port} "), back
        assert (await sending).seq == 3

        # Blocked (as she types it): dropped, answered as taken, she hears nothing.
        assert await alice.block("+34 911 000 000") == [f"tel:{CARRIER}"]
        dropped = await asyncio.to_thread(trunk.message, "+34600111001", b"spam", call_id=uuid.uuid4().hex)
        assert dropped.startswith("SIP/2.0 200 "), dropped
        await alice.quiet()
        assert await alice.unblock(f"tel:{CARRIER}") == []
        assert await alice.texts(conversation.conversation_id) == [text, "national", "thanks"]

        # Nobody holds the number; not text; not UTF-8.
        nobody = await asyncio.to_thread(trunk.message, "+34600999999", b"hi", call_id=uuid.uuid4().hex)
        assert nobody.startswith("SIP/2.0 404 "), nobody
        html = await asyncio.to_thread(
            trunk.message, "+34600111001", b"<p>hi</p>", call_id=uuid.uuid4().hex, content_type="text/html"
        )
        assert html.startswith("SIP/2.0 415 ") and "Accept: text/plain" in html, html
        latin1 = await asyncio.to_thread(trunk.message, "+34600111001", "¿qué?".encode("latin-1"), call_id="x1")
        assert latin1.startswith("SIP/2.0 400 "), latin1
        await alice.quiet()
    finally:
        trunk.close()


async def test_receive_message_is_for_the_gateways_key_only(gateway: Gateway, channel: grpc.aio.Channel) -> None:
    alice = await chatter(gateway, channel, "alice")
    request = messages_pb2.ReceiveMessageRequest(
        phone_number="+34600111001",
        sender=f"tel:{CARRIER}",
        text="spoofed",
        request_id=hashlib.md5(b"x").hexdigest(),
    )
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        alice.chat.ReceiveMessage(request, metadata=alice.metadata),
        "not open to subscribers",
    )
    gateway_key = (("authorization", f"Bearer {gateway.key}"),)
    request.sender = "<script>"
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.chat.ReceiveMessage(request, metadata=gateway_key), "sender")
    request.sender, request.phone_number = f"tel:{CARRIER}", "+34600999999"
    await fails(grpc.StatusCode.NOT_FOUND, alice.chat.ReceiveMessage(request, metadata=gateway_key))
    await asyncio.wait_for(alice.quiet(), seconds())
