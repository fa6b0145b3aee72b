"""Calls through the real gateway in wac's call history, in presence, and
ended by an operator through the SAPI: Kamailio reports each call (evapi),
the core records it; sipp is the caller and the trunk."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from connectors.kamailio import KamailioRpc
from core.calls.gateway import ReportKind
from tests.calls.support import Device, eventually
from tests.gateway.conftest import Gateway
from tests.sapi.support import online, rfc3339, sapi_client
from tests.support.core import api_key
from tests.support.gateway import SCENARIOS, SipTcp, Trunk, busy, start_sipp, start_sipp_uas
from tests.support.gateway import response as sip_response
from tests.support.server import free_port
from tests.support.timing import seconds
from wac.v1 import calls_pb2

NUMBER = "+34911222333"
Call = calls_pb2.Call


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        yield channel


@pytest.fixture
async def operator(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The SAPI through Envoy, with an operator's key."""
    key = await api_key(gateway.stack.core, "noc", "calls.read", "calls.write", "presence.read")
    async with sapi_client(gateway.stack, key) as client:
        yield client


async def listening(gateway: Gateway) -> None:
    """The core reads the gateway's call reports (it connects once Kamailio is up)."""
    reports = gateway.stack.core.gateway_events
    assert reports is not None
    await asyncio.wait_for(reports.connected.wait(), seconds())


async def history(device: Device) -> list[Call]:
    response = await device.calls.ListCalls(calls_pb2.ListCallsRequest(), metadata=device.metadata)
    return list(response.calls)


async def ended_calls(device: Device, count: int = 1) -> list[Call]:
    """The subscriber's history once it holds count ended calls."""

    async def check() -> list[Call] | None:
        calls = [c for c in await history(device) if c.state == Call.ENDED]
        return calls if len(calls) >= count else None

    result: list[Call] = await eventually(check)
    return result


def call_number(gateway: Gateway, token: str, tmp_path: Path, scenario: str) -> subprocess.Popen[bytes]:
    """A subscriber's SIP client (sipp over TCP) calling NUMBER with its token."""
    return start_sipp(
        "-sf", str(SCENARIOS / scenario),
        "-t", "t1", "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
        "-key", "caller", "alice", "-key", "token", token, "-s", NUMBER, "-m", "1",
        f"127.0.0.1:{gateway.sip_port}",
        log=tmp_path / f"{scenario}.log",
        timeout=seconds(2),
    )  # fmt: skip


async def finished(process: subprocess.Popen[bytes], log: Path) -> None:
    code = await asyncio.to_thread(process.wait, seconds(2))
    if code != 0:
        output = await asyncio.to_thread(log.read_text, errors="replace")
        raise AssertionError(f"sipp exited {code}: {output[-3000:]}")


async def test_a_call_to_a_number_is_in_the_history_of_its_caller_and_of_the_operator(
    gateway: Gateway, channel: grpc.aio.Channel, operator: httpx.AsyncClient, tmp_path: Path
) -> None:
    await listening(gateway)
    alice = await online(gateway.stack, channel, "alice")
    try:
        trunk = await asyncio.to_thread(
            start_sipp_uas, gateway.trunk_port, trace=tmp_path / "trunk.msg", log=tmp_path / "trunk.log",
            timeout=seconds(2),
        )  # fmt: skip
        # INVITE, 200, ACK, a hold re-INVITE, then alice's BYE.
        caller = call_number(gateway, alice.token, tmp_path, "call_number.xml")
        await finished(caller, tmp_path / "call_number.xml.log")
        await finished(trunk, tmp_path / "trunk.log")

        [call] = await ended_calls(alice)
        assert (call.caller, call.callee, call.via) == ("alice", f"tel:{NUMBER}", Call.SIP)
        assert call.caller_device == alice.session_id
        assert call.sip_call_id
        assert (call.end_reason, call.ended_by) == (Call.COMPLETED, "alice")
        created, answered, ended = (
            t.ToDatetime().timestamp() for t in (call.create_time, call.answer_time, call.end_time)
        )
        assert created <= answered < ended
        # The scenario waits 200 ms before the hold and as long before the BYE.
        assert call.duration.ToTimedelta().total_seconds() >= 0.3
        assert call.media.audio and not call.media.video

        # The operator's view through the SAPI: the same call.
        response = await operator.get("/sapi/v1/calls", params={"subscriber": "alice"})
        assert response.status_code == 200, response.text
        [listed] = response.json()["calls"]
        assert listed["callId"] == call.call_id
        assert (listed["via"], listed["callee"], listed["endReason"], listed["endedBy"]) == (
            "SIP", f"tel:{NUMBER}", "COMPLETED", "alice",
        )  # fmt: skip
        assert listed["sipCallId"] == call.sip_call_id
        assert rfc3339(listed["answerTime"]) < rfc3339(listed["endTime"])
        assert listed["duration"].endswith("s")
        # A party cannot signal a gateway call over the WAPI once it ended.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice.calls.HangupCall(calls_pb2.HangupCallRequest(call_id=call.call_id), metadata=alice.metadata)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await alice.disconnect()


async def presence(operator: httpx.AsyncClient, username: str) -> dict[str, Any]:
    response = await operator.get(f"/sapi/v1/subscribers/{username}/presence")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_operator_ends_a_gateway_call_both_legs_get_bye_and_presence_shows_it(
    gateway: Gateway, channel: grpc.aio.Channel, operator: httpx.AsyncClient, tmp_path: Path
) -> None:
    await listening(gateway)
    alice = await online(gateway.stack, channel, "alice")
    try:
        await eventually(lambda: _status(operator, "alice", "AVAILABLE"))
        # Both legs answer and then wait for the gateway's BYE.
        trunk = await asyncio.to_thread(
            start_sipp_uas, gateway.trunk_port, trace=tmp_path / "trunk.msg", log=tmp_path / "trunk.log",
            scenario="trunk_hangup.xml", timeout=seconds(2),
        )  # fmt: skip
        caller = call_number(gateway, alice.token, tmp_path, "call_number_until_bye.xml")

        async def active() -> dict[str, Any] | None:
            response = await operator.get("/sapi/v1/calls", params={"state": "ACTIVE"})
            assert response.status_code == 200, response.text
            calls = response.json().get("calls", [])
            return calls[0] if calls else None

        live = await eventually(active)
        assert (live["caller"], live["callee"], live["via"]) == ("alice", f"tel:{NUMBER}", "SIP")
        # What a core that connects now would adopt from Kamailio's dialogs.
        rpc = KamailioRpc(f"127.0.0.1:{gateway.kamailio.settings.jsonrpc_port}")
        try:
            [adopted] = [d.report() for d in await rpc.dialogs()]
        finally:
            await rpc.close()
        assert adopted is not None and adopted.kind is ReportKind.ANSWER
        assert (adopted.sip_call_id, adopted.caller, adopted.callee) == (live["sipCallId"], "alice", f"tel:{NUMBER}")
        assert adopted.caller_session == alice.session_id
        # In a call through the gateway, alice reads busy to watchers.
        busy_now = await eventually(lambda: _status(operator, "alice", "BUSY"))
        assert busy_now["reason"] == "IN_CALL"
        # A subscriber cannot answer or renegotiate it over the WAPI: it is SIP's.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice.calls.Renegotiate(
                calls_pb2.RenegotiateRequest(
                    call_id=live["callId"],
                    description=calls_pb2.SessionDescription(type=calls_pb2.SessionDescription.OFFER, sdp="v=0\r\n"),
                ),
                metadata=alice.metadata,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SIP gateway" in (refused.value.details() or "")

        response = await operator.post(f"/sapi/v1/calls/{live['callId']}:hangup", json={})
        assert response.status_code == 200, response.text
        ended = response.json()
        assert (ended["state"], ended["endReason"], ended["endedBy"]) == ("ENDED", "OPERATOR", "noc")
        # Both legs got the gateway's BYE and answered it.
        await finished(caller, tmp_path / "call_number_until_bye.xml.log")
        await finished(trunk, tmp_path / "trunk.log")
        await eventually(lambda: _status(operator, "alice", "AVAILABLE"))

        stored = await operator.get(f"/sapi/v1/calls/{live['callId']}")
        assert stored.json()["endReason"] == "OPERATOR"
        [call] = await ended_calls(alice)
        assert (call.end_reason, call.ended_by) == (Call.OPERATOR, "noc")
        assert call.duration.ToTimedelta().total_seconds() > 0
        # Ended once: a second hangup is refused, not repeated.
        again = await operator.post(f"/sapi/v1/calls/{live['callId']}:hangup", json={})
        assert again.status_code == 400, again.text
    finally:
        await alice.disconnect()


async def _status(operator: httpx.AsyncClient, username: str, status: str) -> dict[str, Any] | None:
    body = await presence(operator, username)
    return body if body["status"] == status else None


async def test_a_busy_callee_and_an_unreachable_one_are_in_both_histories(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    await listening(gateway)
    alice, bob = await online(gateway.stack, channel, "alice"), await online(gateway.stack, channel, "bob")
    try:

        def busy_then_unreachable() -> tuple[int, int, int]:
            with SipTcp(gateway.sip_port) as caller:
                with SipTcp(gateway.sip_port) as phone:
                    assert phone.register("bob", token=bob.token).status == 200
                    caller.send_invite("alice", "sip:bob@127.0.0.1", token=alice.token)
                    phone.sock.sendall(busy(phone.read_request()).encode())
                    refused = caller.read()
                    while refused.status < 200:
                        refused = caller.read()
                # bob's connection is gone, and with it his registration.
                unreachable = caller.invite("alice", "sip:bob@127.0.0.1", token=alice.token).status
                # Nobody by that name: no call to record, as over the WAPI.
                nobody = caller.invite("alice", "sip:nobody@127.0.0.1", token=alice.token).status
                return refused.status, unreachable, nobody

        assert await asyncio.to_thread(busy_then_unreachable) == (486, 404, 404)
        unreachable, refused = await ended_calls(alice, 2)
        assert (refused.callee, refused.end_reason, refused.ended_by) == ("bob", Call.BUSY, "bob")
        assert refused.answer_time.seconds == 0 and not refused.HasField("duration")
        assert (unreachable.callee, unreachable.end_reason) == ("bob", Call.UNAVAILABLE)
        assert {c.via for c in (refused, unreachable)} == {Call.SIP}
        # The callee's history holds both too; nobody's call is in neither.
        assert [c.call_id for c in await ended_calls(bob, 2)] == [unreachable.call_id, refused.call_id]
        assert len(await history(alice)) == 2
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def test_a_call_from_the_trunk_is_in_the_history_of_the_number_s_owner(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    await listening(gateway)
    bob = await online(gateway.stack, channel, "bob")
    try:

        def declined_call_in() -> str:
            trunk = Trunk(gateway)
            try:
                with SipTcp(gateway.sip_port) as phone:
                    assert phone.register("bob", token=bob.token).status == 200
                    trunk.invite("+34600111002")  # bob's number
                    phone.sock.sendall(busy(phone.read_request()).encode())
                    return trunk.final()
            finally:
                trunk.close()

        final = await asyncio.to_thread(declined_call_in)
        assert final.startswith("SIP/2.0 486"), final
        [call] = await ended_calls(bob)
        assert (call.caller, call.callee, call.via) == ("tel:+34911000000", "bob", Call.SIP)
        assert (call.caller_device, call.end_reason, call.ended_by) == ("", Call.BUSY, "bob")
    finally:
        await bob.disconnect()


async def test_an_operator_cancels_a_ringing_gateway_call(
    gateway: Gateway, channel: grpc.aio.Channel, operator: httpx.AsyncClient
) -> None:
    await listening(gateway)
    alice, bob = await online(gateway.stack, channel, "alice"), await online(gateway.stack, channel, "bob")
    try:
        with SipTcp(gateway.sip_port) as caller, SipTcp(gateway.sip_port) as phone:
            registered = await asyncio.to_thread(phone.register, "bob", token=bob.token)
            assert registered.status == 200
            await asyncio.to_thread(caller.send_invite, "alice", "sip:bob@127.0.0.1", token=alice.token)
            invite = await asyncio.to_thread(phone.read_request)
            assert invite.startswith("INVITE ")
            # A branch is cancelled once it has answered provisionally (RFC 3261 9.1).
            await asyncio.to_thread(phone.sock.sendall, sip_response(invite, "180 Ringing").encode())

            async def ringing() -> dict[str, Any] | None:
                response = await operator.get("/sapi/v1/calls", params={"state": "RINGING"})
                calls = response.json().get("calls", [])
                return calls[0] if calls else None

            live = await eventually(ringing)
            response = await operator.post(f"/sapi/v1/calls/{live['callId']}:hangup", json={})
            assert response.status_code == 200, response.text
            assert (response.json()["endReason"], response.json()["endedBy"]) == ("OPERATOR", "noc")
            # bob's phone gets the CANCEL; answering it ends the INVITE, and
            # alice gets 487 Request Terminated.
            cancel = await asyncio.to_thread(phone.read_request)
            assert cancel.startswith("CANCEL "), cancel
            await asyncio.to_thread(phone.reply, cancel, "200 OK")
            await asyncio.to_thread(phone.sock.sendall, sip_response(invite, "487 Request Terminated").encode())

            def final() -> int:
                answer = caller.read()
                while answer.status < 200:
                    answer = caller.read()
                return answer.status

            assert await asyncio.to_thread(final) == 487
        [call] = await ended_calls(bob)
        assert (call.state, call.end_reason, call.ended_by) == (Call.ENDED, Call.OPERATOR, "noc")
        assert not call.HasField("duration")
    finally:
        await alice.disconnect()
        await bob.disconnect()
