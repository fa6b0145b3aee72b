"""Calls from the trunk: the gateway asks the SAPI who owns the number
(GET /sapi/v1/phoneNumbers/{number}) and rings every registration of that
subscriber, with media anchored towards them; nobody owns it: 404."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway.conftest import PASSWORD, Gateway, start_gateway
from tests.support.core import add_subscriber
from tests.support.gateway import SipTcp, Trunk, busy, require_gateway
from tests.support.server import free_port
from tests.support.stack import running_stack


async def test_a_call_from_the_trunk_rings_every_registration_of_the_numbers_owner(gateway: Gateway) -> None:
    token = await gateway.token("bob")  # bob holds +34600111002

    def call() -> tuple[list[str], str]:
        trunk = Trunk(gateway)
        try:
            with SipTcp(gateway.sip_port) as phone, SipTcp(gateway.sip_port) as laptop:
                for device in (phone, laptop):
                    assert device.register("bob", token=token).status == 200
                trunk.invite("+34600111002")
                invites = [phone.read_request(), laptop.read_request()]
                for device, invite in zip((phone, laptop), invites, strict=True):
                    device.sock.sendall(busy(invite).encode())
                return invites, trunk.final()
        finally:
            trunk.close()

    invites, final = await asyncio.to_thread(call)
    for invite in invites:
        assert invite.startswith("INVITE sip:bob@127.0.0.1:"), invite
        # rtpengine's offer for a browser: DTLS-SRTP with ICE, from its own port.
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-ufrag:", "a=fingerprint:", "a=rtcp-mux"):
            assert line in invite, line
        assert "m=audio 40000 " not in invite, "the media is anchored, not passed through"
    assert final.startswith("SIP/2.0 486 "), final


BROWSER_ANSWER = (
    "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
    "a=ice-ufrag:brws\r\na=ice-pwd:browserbrowserbrowserbr\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    "a=fingerprint:sha-256 5A:2B:7E:62:1C:0D:8C:9D:43:11:35:08:8F:5A:6C:3E"
    ":12:7A:D4:49:6B:1E:40:31:2C:9A:05:1D:37:60:AB:88\r\n"
    "a=setup:active\r\na=sendrecv\r\n"
)


def answered(invite: str, local: int) -> str:
    """200 OK with a browser's answer to an INVITE the gateway sent a device."""
    head = invite.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [
        line for line in head if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq", "record-route")
    ]
    to = next(line for line in head if line.lower().startswith("to:"))
    headers = "\r\n".join([*keep, f"{to};tag=browser1", f"Contact: <sip:bob@127.0.0.1:{local};transport=tcp>"])
    return (
        f"SIP/2.0 200 OK\r\n{headers}\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(BROWSER_ANSWER)}\r\n\r\n{BROWSER_ANSWER}"
    )


async def test_the_browsers_answer_reaches_the_trunk_as_plain_rtp_through_rtpengine(gateway: Gateway) -> None:
    token = await gateway.token("bob")

    def call() -> str:
        trunk = Trunk(gateway)
        try:
            with SipTcp(gateway.sip_port) as phone:
                assert phone.register("bob", token=token).status == 200
                trunk.invite("+34600111002")
                phone.sock.sendall(answered(phone.read_request(), phone.local).encode())
                return trunk.final()
        finally:
            trunk.close()

    final = await asyncio.to_thread(call)
    assert final.startswith("SIP/2.0 200 "), final
    media = re.search(r"^m=audio (\d+) RTP/AVP 0\r$", final, re.MULTILINE)
    assert media is not None, final
    assert gateway.rtpengine.port_min <= int(media[1]) < gateway.rtpengine.port_min + 100
    for browser_only in ("a=ice-", "a=candidate", "a=fingerprint", "a=setup", "SAVPF"):
        assert browser_only not in final, browser_only


async def test_a_call_from_the_trunk_to_a_number_nobody_holds_is_404(gateway: Gateway) -> None:
    def call() -> str:
        trunk = Trunk(gateway)
        try:
            trunk.invite("+34699999999")
            return trunk.final()
        finally:
            trunk.close()

    assert (await asyncio.to_thread(call)).startswith("SIP/2.0 404 ")


async def test_a_call_from_the_trunk_to_a_national_number_finds_its_holder(gateway: Gateway) -> None:
    token = await gateway.token("bob")

    def call() -> str:
        trunk = Trunk(gateway)
        try:
            with SipTcp(gateway.sip_port) as phone:
                assert phone.register("bob", token=token).status == 200
                trunk.invite("600111002")  # bob's +34600111002 in the default region, ES
                invite = phone.read_request()
                phone.sock.sendall(busy(invite).encode())
                trunk.final()
                return invite
        finally:
            trunk.close()

    assert (await asyncio.to_thread(call)).startswith("INVITE sip:bob@127.0.0.1:")


async def test_a_call_from_the_trunk_to_a_holder_with_no_registration_is_404(gateway: Gateway) -> None:
    def call() -> str:
        trunk = Trunk(gateway)
        try:
            trunk.invite("+34600111001")  # alice's, and alice has not registered
            return trunk.final()
        finally:
            trunk.close()

    assert (await asyncio.to_thread(call)).startswith("SIP/2.0 404 ")


@pytest.fixture
async def tcp_trunk_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway whose trunk_uri says ;transport=tcp: every TCP request from
    the trunk's address (127.0.0.1) is the trunk's; subscribers' SIP clients
    connect from 127.0.0.2."""
    require_gateway()
    ws_port = free_port()
    async with running_stack(tmp_path / "data", gateway_ws=f"127.0.0.1:{ws_port}") as stack:
        await add_subscriber(stack.core, "bob", PASSWORD, phone_numbers=["+34600111002"])
        running = await start_gateway(tmp_path, stack, ws_port=ws_port, trunk_transport="tcp")
        try:
            yield running
        finally:
            await asyncio.to_thread(running.kamailio.stop)
            await asyncio.to_thread(running.rtpengine.stop)


async def test_a_trunk_on_tcp_calls_in_from_any_port_and_subscribers_still_need_their_token(
    tcp_trunk_gateway: Gateway,
) -> None:
    gateway = tcp_trunk_gateway
    token = await gateway.token("bob")

    def call() -> tuple[int, str, int]:
        with SipTcp(gateway.sip_port, source="127.0.0.2") as phone:
            unauthenticated = phone.register("bob").status
            assert phone.register("bob", token=token).status == 200
            # The carrier: a TCP connection from the trunk's address, any
            # port, without a token.
            with SipTcp(gateway.sip_port) as carrier:
                carrier.send_invite("+34911000000", "sip:+34600111002@127.0.0.1")
                invite = phone.read_request()
                phone.sock.sendall(busy(invite).encode())
                final = carrier.read()
                while final.status < 200:
                    final = carrier.read()
                return unauthenticated, invite, final.status

    unauthenticated, invite, final = await asyncio.to_thread(call)
    assert unauthenticated == 401, "a client from another address is a subscriber's, not the trunk's"
    assert invite.startswith("INVITE sip:bob@127.0.0.2:"), invite
    assert "UDP/TLS/RTP/SAVPF" in invite, "the trunk's media is anchored towards the browser"
    assert final == 486
