"""Calls through the gateway against the real SAPI: to a number (the trunk is
sipp's UAS), allowed or refused by call.pstn."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from tests.gateway.conftest import Gateway
from tests.support.gateway import SCENARIOS, SipTcp, find, sipp, start_sipp_uas, traced
from tests.support.server import free_port
from tests.support.timing import seconds

NUMBER = "+34911222333"


async def test_a_call_to_a_number_reaches_the_trunk_anchored_and_without_the_token(
    gateway: Gateway, tmp_path: Path
) -> None:
    token = await gateway.token("alice")  # alice has the role pstn
    trunk_trace, caller_trace = tmp_path / "trunk.msg", tmp_path / "caller.msg"
    trunk = await asyncio.to_thread(start_sipp_uas, gateway.trunk_port, trace=trunk_trace, log=tmp_path / "trunk.log")
    try:
        # Over TCP, the subscriber's side: the policy does not depend on the transport.
        result = await asyncio.to_thread(
            sipp,
            "-sf", str(SCENARIOS / "call_number.xml"),
            "-t", "t1", "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
            "-key", "caller", "alice", "-key", "token", token, "-s", NUMBER, "-m", "1",
            "-trace_msg", "-message_file", str(caller_trace),
            f"127.0.0.1:{gateway.sip_port}",
            log=tmp_path / "caller.log",
            timeout=seconds(2),
        )  # fmt: skip
        caller_log = (tmp_path / "caller.log").read_text(errors="replace")
        assert result.returncode == 0, caller_log + caller_trace.read_text(errors="replace")
        assert await asyncio.to_thread(trunk.wait, seconds()) == 0
    finally:
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait()
    received = trunk_trace.read_text(errors="replace")
    # Neither the header nor the token itself, in the INVITE, ACK, re-INVITE or BYE.
    assert "authorization" not in received.lower()
    for part in token.split("."):
        assert part not in received
    trunk_saw, caller_saw = traced(trunk_trace), traced(caller_trace)
    assert find(trunk_saw, "BYE sip:", "3 BYE"), "the in-dialog BYE reached the trunk"
    # The trunk got rtpengine's plain RTP/AVP offer, on one of its ports,
    # without ICE or DTLS.
    invite = find(trunk_saw, f"INVITE sip:{NUMBER}@127.0.0.1:{gateway.trunk_port} ", "1 INVITE").text
    media = re.search(r"^m=audio (\d+) RTP/AVP 0$", invite, re.MULTILINE)
    assert media is not None, invite
    anchor = gateway.rtpengine.port_min
    assert anchor <= int(media[1]) < anchor + 100, "the media goes through rtpengine"
    assert "a=ice-ufrag" not in invite and "a=fingerprint" not in invite and "SAVP" not in invite
    # The caller got what a browser needs: DTLS-SRTP, ICE and rtcp-mux.
    answer = find(caller_saw, "SIP/2.0 200", "1 INVITE").text
    for line in ("UDP/TLS/RTP/SAVPF", "a=ice-ufrag:", "a=fingerprint:sha-256", "a=rtcp-mux", "typ host"):
        assert line in answer, line
    # The hold (a re-INVITE) is translated the same way, both ways.
    hold = find(trunk_saw, "INVITE sip:", "2 INVITE").text
    assert re.search(r"^m=audio \d+ RTP/AVP 0$", hold, re.MULTILINE), hold
    assert "a=sendonly" in hold and "a=ice-ufrag" not in hold and "a=fingerprint" not in hold
    held = find(caller_saw, "SIP/2.0 200", "2 INVITE").text
    assert "UDP/TLS/RTP/SAVPF" in held and "a=ice-ufrag:" in held and "a=recvonly" in held


async def test_a_call_to_a_number_without_call_pstn_is_forbidden(gateway: Gateway, tmp_path: Path) -> None:
    token = await gateway.token("bob")  # bob has only the role user

    def call(target: str) -> int:
        with SipTcp(gateway.sip_port) as client:
            return client.invite("bob", target, token=token).status

    assert await asyncio.to_thread(call, f"sip:{NUMBER}@127.0.0.1") == 403
    assert await asyncio.to_thread(call, f"tel:{NUMBER}") == 403


async def test_a_call_to_a_number_without_a_token_is_challenged(gateway: Gateway) -> None:
    def call() -> int:
        with SipTcp(gateway.sip_port) as client:
            return client.invite("alice", f"tel:{NUMBER}").status

    assert await asyncio.to_thread(call) == 401


def test_sipp_is_the_one_the_scenarios_are_written_for() -> None:
    version = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False).stdout
    assert "SIPp v3." in version


async def test_a_call_to_another_domain_is_not_relayed(gateway: Gateway) -> None:
    token = await gateway.token("alice")

    def call() -> int:
        with SipTcp(gateway.sip_port) as client:
            return client.invite("alice", "sip:someone@elsewhere.example", token=token).status

    assert await asyncio.to_thread(call) == 403


async def test_a_tel_uri_that_is_not_e164_is_484(gateway: Gateway) -> None:
    token = await gateway.token("alice")

    def call() -> int:
        with SipTcp(gateway.sip_port) as client:
            return client.invite("alice", "tel:911222333;phone-context=example.com", token=token).status

    assert await asyncio.to_thread(call) == 484
