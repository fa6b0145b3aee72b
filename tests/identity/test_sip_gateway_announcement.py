"""Login and RefreshSession tell the client where the SIP gateway is while
[gateway] is enabled, and nothing of one while it is not."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.support.core import add_subscriber, login, running_core
from wac.v1 import identity_pb2, identity_pb2_grpc


async def test_an_enabled_gateway_is_announced_by_path_and_domain(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_DOMAIN": "sip.example.org"}) as core:
        await add_subscriber(core, "alice")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
            assert session.HasField("sip_gateway")
            assert session.sip_gateway == identity_pb2.SipGateway(path="/sip", domain="sip.example.org")
            refreshed = await identity_pb2_grpc.IdentityServiceStub(channel).RefreshSession(
                identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token)
            )
            assert refreshed.sip_gateway == session.sip_gateway


async def test_a_public_url_is_announced_beside_the_path(tmp_path: Path) -> None:
    env = {"WAC_GATEWAY_PUBLIC_URL": "wss://sip.example.org/sip"}
    async with running_core(tmp_path / "data", env) as core:
        await add_subscriber(core, "alice")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
            assert session.sip_gateway.url == "wss://sip.example.org/sip"
            assert session.sip_gateway.path == "/sip"


async def test_a_disabled_gateway_is_not_announced(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_ENABLED": "false"}) as core:
        await add_subscriber(core, "alice")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
            assert not session.HasField("sip_gateway")
