"""The whole path of a gateway call with real parts: the demo in headless
Chromium with the SDK's SIP stack (JsSIP), through Envoy's /sip, Kamailio
(the bearer-token policy against the real SAPI) and rtpengine (DTLS-SRTP
and ICE towards the browser, plain RTP/AVP towards the trunk), to sipp as
the trunk, which echoes the browser's RTP back (-rtp_echo): the browser
receives what it sends only if media flows both ways through the anchor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Playwright, expect

from tests.browser.support import Demo, Phone, ms, open_demo
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.gateway import DOMAIN, require_gateway, start_sipp_uas, traced
from tests.support.server import free_port
from tests.support.timing import seconds

NUMBER = "+34911222333"


@pytest.fixture
async def gateway_demo(playwright: Playwright, tmp_path: Path) -> AsyncIterator[tuple[Demo, Gateway]]:
    """The demo's stack with its front door's /sip proxied to a real gateway;
    alice may call numbers (call.pstn)."""
    require_gateway()
    ws_port = free_port()
    async with open_demo(
        playwright, tmp_path / "data", gateway_ws=f"127.0.0.1:{ws_port}", roles={"alice": ["user", "pstn"]}
    ) as demo:
        gateway = await start_gateway(tmp_path, demo.stack, ws_port=ws_port)
        try:
            yield demo, gateway
        finally:
            await asyncio.to_thread(gateway.kamailio.stop)
            await asyncio.to_thread(gateway.rtpengine.stop)


async def sip_phone(demo: Demo, username: str) -> Phone:
    """The demo logged in as username, registered at the gateway through the front door's /sip."""
    phone = await demo.phone(username, login=False)
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
        alice = await sip_phone(demo, "alice")
        token = await alice.page.evaluate("window.wacDemo.wac.session.accessToken")

        await alice.dial(NUMBER, video=False)
        await alice.expect_state("active", 2)
        await expect(alice.panel).to_have_attribute("data-via", "sip")
        await media_both_ways(alice)

        await alice.testid("hangup").click()
        await alice.expect_ended("COMPLETED")
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
