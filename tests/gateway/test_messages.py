"""MESSAGE (RFC 3428) through the gateway: the same bearer policy as calls;
delivered to every registration of a subscriber without the sender's token;
to the trunk only with message.pstn (tests/gateway/test_chat.py: wac's
chat through the gateway)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from tests.gateway.conftest import Gateway
from tests.support.gateway import SipTcp
from tests.support.timing import seconds


async def test_a_message_without_a_token_is_challenged(gateway: Gateway) -> None:
    def send() -> int:
        with SipTcp(gateway.sip_port) as sender:
            return sender.message("alice", "sip:bob@127.0.0.1", "hi").status

    assert await asyncio.to_thread(send) == 401


async def test_a_message_reaches_the_subscriber_without_the_senders_token(gateway: Gateway) -> None:
    alice, bob = await gateway.token("alice"), await gateway.token("bob")

    def send() -> tuple[str, int]:
        with SipTcp(gateway.sip_port) as phone, SipTcp(gateway.sip_port) as sender:
            assert phone.register("bob", token=bob).status == 200
            # The sender waits for its answer while bob's phone answers.
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(sender.message, "alice", "sip:bob@127.0.0.1", "hello bob", token=alice)
                delivered = phone.read_request()
                phone.reply(delivered, "200 OK")
                return delivered, answer.result(timeout=seconds()).status

    delivered, status = await asyncio.to_thread(send)
    assert status == 200
    assert delivered.startswith("MESSAGE sip:bob@127.0.0.1:") and delivered.endswith("hello bob")
    assert "authorization" not in delivered.lower() and alice.split(".")[2] not in delivered


async def test_a_message_to_a_number_needs_message_pstn(gateway: Gateway) -> None:
    token = await gateway.token("bob")  # no pstn role: message.pstn is not his

    def send() -> int:
        with SipTcp(gateway.sip_port) as sender:
            return sender.message("bob", "tel:+34911222333", "hi", token=token).status

    assert await asyncio.to_thread(send) == 403
