"""SIP over WebSocket (RFC 7118) through the front door: Envoy's /sip to
Kamailio's WebSocket listener, with the same bearer policy."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.gateway.conftest import Gateway
from tests.support.gateway import Trunk, busy
from tests.support.timing import seconds


def register(user: str, authorization: str | None) -> str:
    """A REGISTER as a browser's SIP stack sends it (JsSIP's shape: a .invalid
    Via host and Contact, transport ws)."""
    call = uuid.uuid4().hex
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/WSS {call[:12]}.invalid;branch=z9hG4bK{call}\r\n"
        "Max-Forwards: 69\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={call[:10]}\r\n"
        f"Call-ID: {call}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{call[:8]}@{call[8:20]}.invalid;transport=ws>"
        f';+sip.instance="<urn:uuid:{uuid.uuid4()}>";expires=600\r\n'
        f"{auth}Supported: path, outbound\r\nContent-Length: 0\r\n\r\n"
    )


async def answer(socket: ClientConnection, text: str) -> str:
    await socket.send(text)
    while True:
        reply = await asyncio.wait_for(socket.recv(), seconds())
        assert isinstance(reply, str)
        if not reply.startswith("SIP/2.0 1"):
            return reply


async def test_a_browser_registers_over_the_front_doors_sip_websocket(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    url = f"ws://127.0.0.1:{gateway.stack.port}/sip"
    async with connect(url, subprotocols=[websockets.Subprotocol("sip")]) as socket:
        assert socket.subprotocol == "sip"
        challenged = await answer(socket, register("alice", None))
        assert challenged.startswith("SIP/2.0 401 ")
        assert 'WWW-Authenticate: Bearer realm="127.0.0.1"\r\n' in challenged
        registered = await answer(socket, register("alice", f"Bearer {token}"))
        assert registered.startswith("SIP/2.0 200 "), registered
        # The binding names the WebSocket connection (set_contact_alias), so
        # that calls and dlg.end_dlg reach the browser over it, and the
        # session whose token saved it (connectors/kamailio.py).
        assert re.search(r";alias=127\.0\.0\.1~\d+~5;wac-session=[\w-]+>", registered), registered


async def test_a_websocket_without_the_sip_subprotocol_is_refused(gateway: Gateway) -> None:
    url = f"ws://127.0.0.1:{gateway.stack.port}/sip"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect(url):
            pass
    # Kamailio's websocket module refuses a handshake that offers no "sip".
    assert refused.value.response.status_code == 400


async def test_a_call_from_the_trunk_reaches_a_browser_over_its_websocket(gateway: Gateway) -> None:
    token = await gateway.token("bob")  # bob holds +34600111002
    url = f"ws://127.0.0.1:{gateway.stack.port}/sip"
    async with connect(url, subprotocols=[websockets.Subprotocol("sip")]) as socket:
        registered = await answer(socket, register("bob", f"Bearer {token}"))
        assert registered.startswith("SIP/2.0 200 "), registered
        trunk = Trunk(gateway)
        try:
            await asyncio.to_thread(trunk.invite, "+34600111002")
            # Found by its ;alias=, the browser's connection carries the INVITE.
            invite = await asyncio.wait_for(socket.recv(), seconds())
            assert isinstance(invite, str) and invite.startswith("INVITE sip:"), invite
            assert "UDP/TLS/RTP/SAVPF" in invite and "a=ice-ufrag:" in invite
            await socket.send(busy(invite))
            final = await asyncio.to_thread(trunk.final)
        finally:
            trunk.close()
    assert final.startswith("SIP/2.0 486 "), final
