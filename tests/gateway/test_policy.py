"""The gateway's RFC 8898 policy on REGISTER, against the real SAPI.

The requests go over TCP to the trunk-side listener: the policy is the same
whatever the transport (tests/gateway/test_websocket.py does it over the
WebSocket through Envoy)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from tests.gateway.conftest import Gateway, start_gateway
from tests.support.gateway import SipTcp
from tests.support.server import free_port
from wac.v1 import identity_pb2, identity_pb2_grpc

REALM = 'Bearer realm="127.0.0.1"'


async def register(gateway: Gateway, user: str, **kwargs: str | None) -> tuple[int, str | None, str]:
    def go() -> tuple[int, str | None, str]:
        with SipTcp(gateway.sip_port) as client:
            answer = client.register(user, **kwargs)  # type: ignore[arg-type]
            return answer.status, answer.header("WWW-Authenticate"), answer.text

    return await asyncio.to_thread(go)


async def test_a_register_without_a_token_is_challenged_for_one(gateway: Gateway) -> None:
    status, challenge, text = await register(gateway, "alice")
    assert status == 401, text
    assert challenge == REALM
    assert "\r\nServer: wac-gateway\r\n" in text, "no Kamailio version for a scanner"


async def test_a_register_whose_token_is_not_a_compact_jws_is_refused_before_any_callout(gateway: Gateway) -> None:
    for authorization in ("Bearer not-a-jwt", 'Bearer a.b.c"}', "Bearer a.b.c.d", "Basic YWxpY2U6eA==", "Bearer "):
        status, challenge, text = await register(gateway, "alice", authorization=authorization)
        assert status == 401, (authorization, text)
        assert challenge == f'{REALM}, error="invalid_token", error_description="MALFORMED"', authorization


async def test_a_register_with_the_subscribers_token_is_accepted(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    status, _, text = await register(gateway, "alice", token=token)
    assert status == 200, text
    assert "Contact: <sip:alice@127.0.0.1:" in text, "the binding is saved and answered"


async def test_a_token_of_someone_else_is_forbidden(gateway: Gateway) -> None:
    token = await gateway.token("bob")
    status, _, text = await register(gateway, "alice", token=token)
    assert status == 403, text
    # Registering bob's address from alice's From is refused too.
    status, _, text = await register(gateway, "alice", token=await gateway.token("alice"), to_user="bob")
    assert status == 403, text


async def test_a_token_signed_by_someone_else_is_invalid(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    status, challenge, text = await register(gateway, "alice", token=forged)
    assert status == 401, text
    assert challenge == f'{REALM}, error="invalid_token", error_description="INVALID_SIGNATURE"'


async def test_a_revoked_token_is_refused_within_a_second(gateway: Gateway) -> None:
    token = await gateway.token("alice")
    status, _, text = await register(gateway, "alice", token=token)
    assert status == 200, text
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        admin = await gateway.stack.core.identity.create_api_key("admin", ["admin"])
        await identity_pb2_grpc.IdentityServiceStub(channel).RevokeSessions(
            identity_pb2.RevokeSessionsRequest(username="alice"), metadata=(("authorization", f"Bearer {admin}"),)
        )
    revoked = time.monotonic()
    status, challenge, text = await register(gateway, "alice", token=token)
    assert time.monotonic() - revoked < 1.0
    assert status == 401, text
    assert challenge == f'{REALM}, error="invalid_token", error_description="REVOKED"'


async def test_the_sapi_unreachable_is_503_never_a_pass(gateway: Gateway, tmp_path: Path) -> None:
    # A second gateway whose SAPI is a port nobody listens on.
    directory = tmp_path / "unreachable"
    directory.mkdir()
    cut_off = await start_gateway(
        directory,
        gateway.stack,
        ws_port=free_port(),
        sapi_url=f"http://127.0.0.1:{free_port()}",
        gateway_key=gateway.key,
    )
    try:
        token = await gateway.token("alice")
        status, _, text = await register(cut_off, "alice", token=token)
        assert status == 503, text
    finally:
        await asyncio.to_thread(cut_off.kamailio.stop)
        await asyncio.to_thread(cut_off.rtpengine.stop)


async def test_a_sapi_that_refuses_the_gateways_key_is_503_never_a_pass(gateway: Gateway, tmp_path: Path) -> None:
    directory = tmp_path / "unkeyed"
    directory.mkdir()
    refused = await start_gateway(
        directory, gateway.stack, ws_port=free_port(), gateway_key="wac_not_a_real_key_000000"
    )
    try:
        status, _, text = await register(refused, "alice", token=await gateway.token("alice"))
        assert status == 503, text
    finally:
        await asyncio.to_thread(refused.kamailio.stop)
        await asyncio.to_thread(refused.rtpengine.stop)
