"""The vendor connector (connectors/kamailio.py) against a real Kamailio:
a revoked subscriber's registrations end within a second; registrations
read over JSON-RPC; errors read from the JSON-RPC body."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from connectors.kamailio import Dialog, KamailioError, KamailioRpc
from tests.gateway.conftest import PASSWORD, Gateway
from tests.sapi.support import sapi_client
from tests.support.core import add_subscriber, login, running_core
from tests.support.gateway import SipTcp, jsonrpc, start_sipp_uas, traced
from tests.support.server import free_port
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc


def rpc_port(gateway: Gateway) -> int:
    return gateway.kamailio.settings.jsonrpc_port


def registered(gateway: Gateway, username: str) -> bool:
    return "result" in jsonrpc(rpc_port(gateway), "ul.lookup", "location", username)


async def gone_within(gateway: Gateway, username: str) -> float:
    """Seconds until username has no registration (bounded wait)."""
    start = time.monotonic()
    while await asyncio.to_thread(registered, gateway, username):
        assert time.monotonic() - start < seconds(), f"{username}'s registration outlived the revocation"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_revoking_every_session_ends_the_registrations_within_a_second(gateway: Gateway) -> None:
    alice, bob = await gateway.token("alice"), await gateway.token("bob")
    # Both connections stay open: a dropped one would take its registration
    # with it (handle_lost_tcp) whatever the connector does.
    phone, caller = SipTcp(gateway.sip_port), SipTcp(gateway.sip_port)
    try:
        assert (await asyncio.to_thread(phone.register, "alice", token=alice)).status == 200
        assert await asyncio.to_thread(registered, gateway, "alice")
        async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
            admin = await gateway.stack.core.identity.create_api_key("admin", ["admin"])
            await identity_pb2_grpc.IdentityServiceStub(channel).RevokeSessions(
                identity_pb2.RevokeSessionsRequest(username="alice"), metadata=(("authorization", f"Bearer {admin}"),)
            )
        assert await gone_within(gateway, "alice") < 1.0
        # No call reaches the revoked device; its old token binds nothing.
        assert (await asyncio.to_thread(caller.invite, "bob", "sip:alice@127.0.0.1", token=bob)).status == 404
        again = await asyncio.to_thread(phone.register, "alice", token=alice)
        assert again.status == 401, again.text
        assert 'error_description="REVOKED"' in (again.header("WWW-Authenticate") or "")
        assert not await asyncio.to_thread(registered, gateway, "alice")
    finally:
        phone.close()
        caller.close()


async def test_one_sessions_logout_ends_only_that_sessions_registrations(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        phone_session = await login(channel, "alice", PASSWORD, device="phone")
        laptop_session = await login(channel, "alice", PASSWORD, device="laptop")
        rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
        phone, laptop = SipTcp(gateway.sip_port), SipTcp(gateway.sip_port)
        try:
            for device, session in ((phone, phone_session), (laptop, laptop_session)):
                assert (await asyncio.to_thread(device.register, "alice", token=session.access_token)).status == 200
            assert len(await rpc.registrations("alice")) == 2
            await identity_pb2_grpc.IdentityServiceStub(channel).Logout(
                identity_pb2.LogoutRequest(), metadata=(("authorization", f"Bearer {phone_session.access_token}"),)
            )
            start = time.monotonic()
            while len(left := await rpc.registrations("alice")) != 1:
                assert time.monotonic() - start < seconds(), left
                await asyncio.sleep(0.02)
            assert time.monotonic() - start < 1.0
            # The laptop's binding, saved with its own session, stays.
            assert left[0].session_id == laptop_session.session_id
            assert left[0].contact.startswith(f"sip:alice@127.0.0.1:{laptop.local};")
        finally:
            phone.close()
            laptop.close()
            await rpc.close()


async def test_registrations_lists_every_contact_of_a_subscriber(gateway: Gateway) -> None:
    rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        session = await login(channel, "alice", PASSWORD)
    token = session.access_token
    try:
        assert await rpc.registrations("alice") == []
        with SipTcp(gateway.sip_port) as phone, SipTcp(gateway.sip_port) as laptop:
            for device in (phone, laptop):
                assert (await asyncio.to_thread(device.register, "alice", token=token)).status == 200
            # A refresh (the same session) renews its binding, adds none.
            assert (await asyncio.to_thread(phone.register, "alice", token=token)).status == 200
            found = await rpc.registrations("alice")
            # Each names the session whose token saved it.
            assert sorted(r.contact for r in found) == sorted(
                f"sip:alice@127.0.0.1:{device.local};transport=tcp;wac-session={session.session_id}"
                for device in (phone, laptop)
            )
            assert all(r.session_id == session.session_id for r in found), found
            assert all(0 < r.expires <= 300 and r.call_id and r.ruid for r in found), found
            assert await rpc.registrations("bob") == []
            await rpc.remove_registrations("alice")
            assert await rpc.registrations("alice") == []
            # Nothing left to remove is no error.
            await rpc.remove_registrations("alice")
    finally:
        await rpc.close()


async def test_an_error_is_read_from_the_json_rpc_body(gateway: Gateway) -> None:
    rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
    try:
        with pytest.raises(KamailioError) as raised:
            await rpc.call("no.such.method")
        # Kamailio's code (HTTP status and JSON-RPC error alike) and message.
        assert raised.value.code is not None and raised.value.code >= 400
        assert "no.such.method" in str(raised.value)
    finally:
        await rpc.close()


async def test_a_kamailio_that_is_down_is_a_kamailio_error() -> None:
    rpc = KamailioRpc(f"127.0.0.1:{free_port()}", timeout=seconds(0.2))
    try:
        with pytest.raises(KamailioError) as raised:
            await rpc.registrations("alice")
        assert raised.value.code is None
    finally:
        await rpc.close()


async def test_a_kamailio_that_is_down_does_not_fail_the_revocation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{free_port()}"}
    caplog.set_level(logging.WARNING, logger="wac.gateway")
    async with running_core(tmp_path, env) as core:
        await add_subscriber(core, "alice", PASSWORD)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            admin = await core.identity.create_api_key("admin", ["admin"])
            await identity_pb2_grpc.IdentityServiceStub(channel).RevokeSessions(
                identity_pb2.RevokeSessionsRequest(username="alice"), metadata=(("authorization", f"Bearer {admin}"),)
            )
        start = time.monotonic()
        while not any("retrying" in r.getMessage() for r in caplog.records if r.name == "wac.gateway"):
            assert time.monotonic() - start < seconds(), "no warning that Kamailio was not reached"
            await asyncio.sleep(0.02)


NUMBER = "+34910000001"


def start_trunk(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """sipp as the trunk (scenarios/trunk_hangup.xml) on UDP port, its
    messages traced in directory/trunk.msg; returns once it listens."""
    return start_sipp_uas(
        port,
        trace=directory / "trunk.msg",
        log=directory / "trunk.log",
        scenario="trunk_hangup.xml",
        timeout=seconds(2),
    )


def answered_call(caller: SipTcp, token: str) -> str:
    """INVITE NUMBER from alice, its 200 ACKed along its route set; the Call-ID."""
    caller.send_invite("alice", f"sip:{NUMBER}@127.0.0.1", token=token)
    while (answer := caller.read()).status < 200:
        pass
    assert answer.status == 200, answer.text
    head = answer.text.split("\r\n\r\n", 1)[0].split("\r\n")
    fields = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head[1:]}
    record_route = [line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("record-route:")]
    routes = [uri.strip() for value in reversed(record_route) for uri in reversed(value.split(","))]
    target = fields["contact"].strip("<>").split(">", 1)[0]
    call_id, cseq = fields["call-id"], fields["cseq"].split()[0]
    route = "".join(f"Route: {uri}\r\n" for uri in routes)
    caller.sock.sendall(
        (
            f"ACK {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{caller.local};branch=z9hG4bK{call_id}ack\r\n"
            f"{route}Max-Forwards: 70\r\nFrom: {fields['from']}\r\nTo: {fields['to']}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    return call_id


async def acked(rpc: KamailioRpc, call_id: str) -> Dialog:
    """The call's dialog, once listed with its ACK through (state 4:
    confirmed and ACKed)."""
    start = time.monotonic()
    while not (ours := [d for d in await rpc.dialogs() if d.call_id == call_id and d.state == 4]):
        assert time.monotonic() - start < seconds(), await rpc.dialogs()
        await asyncio.sleep(0.02)
    return ours[0]


async def test_a_gateway_call_is_listed_and_ended_with_a_bye_to_both_sides(gateway: Gateway, tmp_path: Path) -> None:
    rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
    token = await gateway.token("alice")  # alice has the role pstn
    trunk = await asyncio.to_thread(start_trunk, gateway.trunk_port, tmp_path)
    caller = SipTcp(gateway.sip_port)
    try:
        call_id = await asyncio.to_thread(answered_call, caller, token)
        dialog = await acked(rpc, call_id)
        assert dialog.from_uri == "sip:alice@127.0.0.1" and NUMBER in dialog.to_uri
        assert dialog.start_time > 0

        await rpc.end_dialog(dialog)
        # Kamailio sent the callee's BYE itself (the caller answers only
        # below, so no race dropped it).
        assert await rpc.callee_bye_sent(dialog)
        # The caller gets its BYE (and answers it); so does the trunk, whose
        # scenario ends only on a BYE it answered.
        bye = await asyncio.to_thread(caller.read_request)
        assert bye.startswith("BYE ") and f"Call-ID: {call_id}" in bye, bye
        await asyncio.to_thread(caller.reply, bye, "200 OK")
        assert await asyncio.to_thread(trunk.wait, seconds(2)) == 0, (tmp_path / "trunk.log").read_text()
        assert any(m.received and m.first_line.startswith("BYE ") for m in traced(tmp_path / "trunk.msg"))
        start = time.monotonic()
        while any(d.call_id == call_id for d in await rpc.dialogs()):
            assert time.monotonic() - start < seconds(), "the ended dialog is still listed"
            await asyncio.sleep(0.02)
        # Ending it again: Kamailio no longer knows it.
        with pytest.raises(KamailioError):
            await rpc.end_dialog(dialog)
    finally:
        caller.close()
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait()
        await rpc.close()


async def test_the_callee_s_bye_is_sent_by_the_connector_when_kamailio_drops_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    # dlg.end_dlg sometimes sends only the caller's BYE (kamailio#4169,
    # #4268: the caller's answer is handled before the callee's BYE is
    # built). The connector then sends it itself, built from dlg.list's
    # callee leg: here it is sent alone, and the trunk takes it as the
    # dialog's BYE (its scenario ends only on a BYE it answered).
    rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
    token = await gateway.token("alice")
    trunk = await asyncio.to_thread(start_trunk, gateway.trunk_port, tmp_path)
    caller = SipTcp(gateway.sip_port)
    try:
        call_id = await asyncio.to_thread(answered_call, caller, token)
        dialog = await acked(rpc, call_id)
        assert dialog.callee.tag and dialog.callee.contact.startswith("sip:"), dialog.callee
        assert not await rpc.callee_bye_sent(dialog), "no BYE yet"

        await rpc.bye_callee(dialog)
        assert await asyncio.to_thread(trunk.wait, seconds(2)) == 0, (tmp_path / "trunk.log").read_text()
        [bye] = [m for m in traced(tmp_path / "trunk.msg") if m.received and m.first_line.startswith("BYE ")]
        assert f"Call-ID: {call_id}" in bye.text and f"tag={dialog.callee.tag}" in bye.text, bye.text
        assert f"CSeq: {dialog.cseq + 1} BYE" in bye.text, bye.text
        # Kamailio's own transaction of it: what end_dialog looks for.
        assert await rpc.callee_bye_sent(dialog)
    finally:
        caller.close()
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait()
        await rpc.close()


async def test_a_contact_that_names_a_session_itself_is_refused(gateway: Gateway) -> None:
    # Else a stolen token's binding could name another session and outlive
    # the revocation of its own.
    token = await gateway.token("alice")

    def register() -> int:
        with SipTcp(gateway.sip_port) as client:
            return client.request(
                f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{client.local};branch=z9hG4bKforged\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=forged\r\nTo: <sip:alice@127.0.0.1>\r\n"
                "Call-ID: forged\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:alice@127.0.0.1:{client.local};transport=tcp;wac-session=another>;expires=300\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            ).status

    assert await asyncio.to_thread(register) == 400
    assert not await asyncio.to_thread(registered, gateway, "alice")


async def test_a_refreshed_tokens_re_register_renews_the_same_binding(gateway: Gateway) -> None:
    # The SDK puts a fresh token in place before each re-REGISTER: it names
    # the same session, so the binding is renewed, not doubled.
    rpc = KamailioRpc(f"127.0.0.1:{rpc_port(gateway)}")
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        first = await login(channel, "alice", PASSWORD)
        refreshed = await identity_pb2_grpc.IdentityServiceStub(channel).RefreshSession(
            identity_pb2.RefreshSessionRequest(refresh_token=first.refresh_token)
        )
    assert refreshed.access_token != first.access_token
    try:
        with SipTcp(gateway.sip_port) as phone:
            assert (await asyncio.to_thread(phone.register, "alice", token=first.access_token)).status == 200
            assert (await asyncio.to_thread(phone.register, "alice", token=refreshed.access_token)).status == 200
            [binding] = await rpc.registrations("alice")
            assert binding.session_id == first.session_id == refreshed.session_id
    finally:
        await rpc.close()


async def test_revoking_over_the_sapi_ends_the_registrations_within_a_second(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    admin = await gateway.stack.core.identity.create_api_key("operator", ["admin"])
    with SipTcp(gateway.sip_port) as phone:
        assert (await asyncio.to_thread(phone.register, "alice", token=token)).status == 200
        async with sapi_client(gateway.stack, admin) as sapi:
            answer = await sapi.post("/sapi/v1/subscribers/alice:revokeSessions")
        assert answer.status_code == 200, answer.text
        assert await gone_within(gateway, "alice") < 1.0


async def test_a_revocation_by_another_core_ends_the_registrations_within_a_second(
    gateway: Gateway, tmp_path: Path
) -> None:
    token = await gateway.token("alice")
    # A second core on the same database, whose own jsonrpc_listen is a port
    # nobody listens on: only the first core's poll can end the binding.
    async with running_core(tmp_path / "data") as other:
        with SipTcp(gateway.sip_port) as phone:
            assert (await asyncio.to_thread(phone.register, "alice", token=token)).status == 200
            admin = await other.identity.create_api_key("admin-elsewhere", ["admin"])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
                await identity_pb2_grpc.IdentityServiceStub(channel).RevokeSessions(
                    identity_pb2.RevokeSessionsRequest(username="alice"),
                    metadata=(("authorization", f"Bearer {admin}"),),
                )
            # Within the poll ([identity] revocation_poll, 0.2 s in tests) and a second.
            assert await gone_within(gateway, "alice") < 1.2
