"""The whole path of a gateway call with real parts: the demo in headless
Chromium with the SDK's SIP stack (JsSIP), through Envoy's /sip, Kamailio
(the bearer-token policy against the real SAPI) and rtpengine (DTLS-SRTP
and ICE towards the browser, plain RTP/AVP towards the trunk), to sipp as
the trunk, which echoes the browser's RTP back (-rtp_echo): the browser
receives what it sends only if media flows both ways through the anchor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Playwright, expect

from tests.browser.support import Demo, Phone, messages, ms, open_demo, write
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.gateway import DOMAIN, SCENARIOS, Trunk, require_gateway, start_sipp, start_sipp_uas, traced
from tests.support.server import free_port
from tests.support.timing import seconds

NUMBER = "+34911222333"
CARRIER = "+34911000000"  # the caller in scenarios/trunk_call_in.xml


@pytest.fixture
async def gateway_demo(playwright: Playwright, tmp_path: Path) -> AsyncIterator[tuple[Demo, Gateway]]:
    """The demo's stack with its front door's /sip proxied to a real gateway;
    alice may call numbers (call.pstn)."""
    require_gateway()
    ws_port, jsonrpc_port, events_port = free_port(), free_port(), free_port()
    # The core's vendor connector on this Kamailio: its calls go in the history.
    env = {
        "WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{jsonrpc_port}",
        "WAC_GATEWAY_EVENTS_LISTEN": f"127.0.0.1:{events_port}",
        # Chat's messages to numbers go in there (connectors/sip_messages.py).
        "WAC_GATEWAY_WS_LISTEN": f"127.0.0.1:{ws_port}",
    }
    async with open_demo(
        playwright, tmp_path / "data", env, gateway_ws=f"127.0.0.1:{ws_port}", roles={"alice": ["user", "pstn"]}
    ) as demo:
        gateway = await start_gateway(
            tmp_path, demo.stack, ws_port=ws_port, jsonrpc_port=jsonrpc_port, events_port=events_port
        )
        try:
            yield demo, gateway
        finally:
            await asyncio.to_thread(gateway.kamailio.stop)
            await asyncio.to_thread(gateway.rtpengine.stop)


async def sip_phone(demo: Demo, username: str, *, announced: bool = False) -> Phone:
    """The demo logged in as username, registered at the gateway through the
    front door's /sip: the one wac announced at login when ``announced``,
    else the one the page names (?gateway=)."""
    phone = await demo.phone(username, login=False)
    if not announced:
        sip = demo.stack.url.replace("http://", "ws://") + "/sip"
        await phone.page.goto(f"{demo.stack.url}/?gateway={sip}&sipDomain={DOMAIN}", timeout=ms())
    await phone.login()
    await expect(phone.testid("gateway-state")).to_have_attribute("data-state", "registered", timeout=ms(2))
    return phone


async def media_both_ways(phone: Phone) -> None:
    """The call's peer connection is up, and its RTP grows both ways."""
    await phone.wait_media("m => m.state === 'connected'")
    await phone.wait_bytes_grow(key="sent")
    await phone.wait_bytes_grow()


async def test_a_browser_calls_a_number_with_media_both_ways_and_hangs_up(
    gateway_demo: tuple[Demo, Gateway], tmp_path: Path
) -> None:
    demo, gateway = gateway_demo
    trace = tmp_path / "trunk.msg"
    trunk = await asyncio.to_thread(
        start_sipp_uas, gateway.trunk_port, trace=trace, log=tmp_path / "trunk.log", scenario="trunk_answer.xml"
    )
    try:
        alice = await sip_phone(demo, "alice", announced=True)
        token = await alice.page.evaluate("window.wacDemo.wac.session.accessToken")

        await alice.dial(NUMBER, video=False)
        await alice.expect_state("active", 2)
        await expect(alice.panel).to_have_attribute("data-via", "sip")
        await media_both_ways(alice)

        await alice.testid("hangup").click()
        await alice.expect_ended("COMPLETED")
        # The call is in alice's history, through the gateway, to the number.
        await alice.testid("history-refresh").click()
        row = alice.testid("history-row").first
        await expect(row).to_have_attribute("data-reason", "COMPLETED", timeout=ms())
        await expect(row).to_have_attribute("data-via", "sip")
        await expect(row).to_contain_text(NUMBER)
        # The trunk's call ended with the browser's BYE: sipp's scenario is complete.
        assert await asyncio.to_thread(trunk.wait, seconds()) == 0, (tmp_path / "trunk.log").read_text()
    finally:
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait()

    received = [message.text for message in traced(trace) if message.received]
    assert [text.split(" ", 1)[0] for text in received] == ["INVITE", "ACK", "BYE"], received
    for text in received:
        assert "authorization" not in text.lower(), text
        for part in token.split("."):
            assert part not in text


async def test_a_sip_call_between_two_browsers_through_the_gateway(gateway_demo: tuple[Demo, Gateway]) -> None:
    demo, _ = gateway_demo
    alice = await sip_phone(demo, "alice")
    bob = await sip_phone(demo, "bob")

    await alice.dial(f"sip:bob@{DOMAIN}", video=False)
    await bob.answer("alice")
    for phone in (alice, bob):
        await phone.expect_state("active", 2)
        await expect(phone.panel).to_have_attribute("data-via", "sip")
    for phone in (alice, bob):
        await media_both_ways(phone)

    await alice.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    await bob.expect_ended("COMPLETED")
    [bob_end] = await bob.wait_ended()
    assert bob_end["direction"] == "incoming" and bob_end["endedBy"] == "alice", bob_end
    # Both histories hold the one call, ended by alice.
    for phone in (alice, bob):
        await phone.testid("history-refresh").click()
        row = phone.testid("history-row").first
        await expect(row).to_have_attribute("data-reason", "COMPLETED", timeout=ms())
        await expect(row).to_have_attribute("data-via", "sip")
    rows = [await p.testid("history-row").first.get_attribute("data-call-id") for p in (alice, bob)]
    assert rows[0] == rows[1] and rows[0]


async def test_a_call_from_the_trunk_rings_both_browsers_of_the_numbers_holder_and_one_answers(
    gateway_demo: tuple[Demo, Gateway], tmp_path: Path
) -> None:
    demo, gateway = gateway_demo
    phone, laptop = await sip_phone(demo, "bob"), await sip_phone(demo, "bob")  # bob holds +34 600 111 222

    # The carrier's call, from the trunk's address, echoing the RTP it receives.
    arguments = [
        "-sf", str(SCENARIOS / "trunk_call_in.xml"), "-s", "+34600111222",
        "-t", "u1", "-i", "127.0.0.1", "-p", str(gateway.trunk_port),
        "-mi", "127.0.0.1", "-rtp_echo", "-mp", str(free_port()), "-m", "1",
        "-trace_msg", "-message_file", str(tmp_path / "carrier.msg"),
        f"127.0.0.1:{gateway.sip_port}",
    ]  # fmt: skip
    log = tmp_path / "carrier.log"
    carrier = await asyncio.to_thread(start_sipp, *arguments, log=log, timeout=seconds(4))
    try:
        await phone.ringing_from(CARRIER)
        await laptop.ringing_from(CARRIER)
        await laptop.answer(CARRIER)
        await laptop.expect_state("active", 2)
        await expect(laptop.panel).to_have_attribute("data-via", "sip")
        # The other browser stops ringing (the gateway CANCELs its branch).
        await expect(phone.testid("incoming-call")).to_have_count(0, timeout=ms())
        await media_both_ways(laptop)

        await laptop.testid("hangup").click()
        await laptop.expect_ended("COMPLETED")
        # The carrier's call ended with the browser's BYE: sipp's scenario is complete.
        assert await asyncio.to_thread(carrier.wait, seconds()) == 0, log.read_text(errors="replace")
    finally:
        if carrier.poll() is None:
            carrier.kill()
            carrier.wait()
    [phone_end] = await phone.wait_ended()
    assert phone_end["reason"] == "ANSWERED_ELSEWHERE" and phone_end["direction"] == "incoming", phone_end


async def test_a_chat_with_a_number_through_the_gateway_both_ways(gateway_demo: tuple[Demo, Gateway]) -> None:
    """The demo's chat to a number: out as a SIP MESSAGE through the real
    Kamailio to the trunk; the trunk's MESSAGE to bob's number in his page."""
    demo, gateway = gateway_demo
    alice, bob = await demo.phone("alice"), await demo.phone("bob")
    trunk = Trunk(gateway)
    try:
        await alice.testid("chat-to").fill("+34 911 222 333")
        await alice.testid("chat-to-start").click()
        await write(alice, "¿llegas a las 5?")
        delivered = await asyncio.to_thread(trunk.take, "200 OK")
        assert delivered.startswith(f"MESSAGE sip:{NUMBER}@") and delivered.endswith("¿llegas a las 5?"), delivered
        await expect(messages(alice).last).to_have_attribute("data-state", "sent", timeout=ms())
        peer = alice.page.locator(f'[data-testid="chat-conversation"][data-peer="tel:{NUMBER}"]')
        await expect(peer).to_have_count(1, timeout=ms())

        answer = await asyncio.to_thread(trunk.message, "+34600111222", "<b>sí</b>".encode(), call_id=uuid.uuid4().hex)
        assert answer.startswith("SIP/2.0 200 "), answer
        conversation = bob.page.locator(f'[data-testid="chat-conversation"][data-peer="tel:{CARRIER}"]')
        await expect(conversation.get_by_test_id("chat-unread")).to_have_text("1", timeout=ms())
        await conversation.click()
        await expect(messages(bob).last.get_by_test_id("chat-message-text")).to_have_text("<b>sí</b>", timeout=ms())
        await expect(messages(bob).last).to_have_attribute("data-sender", f"tel:{CARRIER}")
    finally:
        trunk.close()
