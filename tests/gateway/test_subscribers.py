"""Between subscribers: a call forks to every registration of the callee;
a dropped connection takes its registration with it; the JSON-RPC the
vendor connector reads (ul.*, dlg.*) answers on loopback."""

from __future__ import annotations

import asyncio
import time

from tests.gateway.conftest import Gateway
from tests.support.gateway import SipTcp, jsonrpc
from tests.support.timing import seconds


async def test_a_call_to_a_subscriber_rings_every_one_of_their_registrations(gateway: Gateway) -> None:
    alice, bob = await gateway.token("alice"), await gateway.token("bob")

    def call() -> list[str]:
        with SipTcp(gateway.sip_port) as phone, SipTcp(gateway.sip_port) as laptop, SipTcp(gateway.sip_port) as caller:
            for device in (phone, laptop):
                assert device.register("bob", token=bob).status == 200
            caller.send_invite("alice", "sip:bob@127.0.0.1", token=alice)
            return [phone.read_request(), laptop.read_request()]

    for device, invite in zip(("phone", "laptop"), await asyncio.to_thread(call), strict=True):
        assert invite.startswith("INVITE sip:bob@127.0.0.1:"), device
        assert "From: <sip:alice@127.0.0.1>" in invite
        # alice's token is hers: it does not reach bob's devices.
        assert "authorization" not in invite.lower() and alice.split(".")[2] not in invite


async def test_a_call_to_a_subscriber_with_no_registration_is_404(gateway: Gateway) -> None:
    alice = await gateway.token("alice")

    def call() -> int:
        with SipTcp(gateway.sip_port) as caller:
            return caller.invite("alice", "sip:bob@127.0.0.1", token=alice).status

    assert await asyncio.to_thread(call) == 404


async def test_a_dropped_connection_takes_its_registration_within_a_second(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    rpc = gateway.kamailio.settings.jsonrpc_port

    def register_then_drop() -> float:
        client = SipTcp(gateway.sip_port)
        assert client.register("alice", token=token).status == 200
        found = jsonrpc(rpc, "ul.lookup", "location", "alice")
        assert "result" in found, found
        client.close()
        dropped = time.monotonic()
        while "result" in jsonrpc(rpc, "ul.lookup", "location", "alice"):
            assert time.monotonic() - dropped < seconds(), "the registration outlived its connection"
            time.sleep(0.02)
        return time.monotonic() - dropped

    assert await asyncio.to_thread(register_then_drop) < 1.0


async def test_the_dialog_list_answers_over_json_rpc(gateway: Gateway) -> None:
    answer = await asyncio.to_thread(jsonrpc, gateway.kamailio.settings.jsonrpc_port, "dlg.list")
    assert "error" not in answer, answer
    unknown = await asyncio.to_thread(jsonrpc, gateway.kamailio.settings.jsonrpc_port, "no.such.method")
    assert "error" in unknown
