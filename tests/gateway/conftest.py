"""A real gateway in front of a real wac: core, edge and Envoy in this
process (tests/support/stack.py), rtpengine and Kamailio as child processes
on free ports, Kamailio asking the SAPI through Envoy with the gateway key
the core provisioned. Blocking SIP clients run in threads: the core that
answers Kamailio's callouts runs on this test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from settings.config import load_config
from settings.gatewaykey import read_gateway_key
from tests.support.core import add_subscriber, login
from tests.support.gateway import Kamailio, KamailioSettings, Rtpengine, require_gateway
from tests.support.server import free_port
from tests.support.stack import Stack, running_stack

PASSWORD = "correct horse"


@dataclass
class Gateway:
    stack: Stack
    kamailio: Kamailio
    rtpengine: Rtpengine
    trunk_port: int
    directory: Path
    key: str  # the gateway's API key towards the SAPI

    @property
    def sip_port(self) -> int:
        return self.kamailio.port

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.stack.core.port}"

    async def token(self, username: str) -> str:
        """A fresh access token of username (logged in over gRPC)."""
        async with grpc.aio.insecure_channel(self.grpc_target) as channel:
            session = await login(channel, username, PASSWORD)
        return str(session.access_token)


async def start_gateway(
    directory: Path,
    stack: Stack,
    *,
    ws_port: int,
    sapi_url: str | None = None,
    gateway_key: str | None = None,
    jsonrpc_port: int | None = None,
    events_port: int | None = None,
    trunk_transport: str = "udp",
) -> Gateway:
    """rtpengine and Kamailio in directory, asking sapi_url (default: the
    stack's front door) with gateway_key (default: the one the core provisioned)."""
    data = directory / "data"
    key = gateway_key or await asyncio.to_thread(read_gateway_key, load_config(None, {"WAC_DATA_DIR": str(data)}), 5)
    rtpengine = Rtpengine(directory)
    await asyncio.to_thread(rtpengine.start)
    settings = KamailioSettings(
        sapi_url=sapi_url or stack.url,
        gateway_key=key,
        rtpengine=rtpengine.control,
        trunk_port=free_port(),
        ws_port=ws_port,
        jsonrpc_port=jsonrpc_port or free_port(),
        events_port=events_port or free_port(),
        trunk_transport=trunk_transport,
    )
    kamailio = Kamailio(directory, settings)
    try:
        await asyncio.to_thread(kamailio.start)
    except BaseException:
        rtpengine.stop()
        raise
    return Gateway(stack, kamailio, rtpengine, settings.trunk_port, directory, key)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The core's vendor connector on this Kamailio: its JSON-RPC and its call reports."""
    require_gateway()
    ws_port, jsonrpc_port, events_port = free_port(), free_port(), free_port()
    env = {
        "WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{jsonrpc_port}",
        "WAC_GATEWAY_EVENTS_LISTEN": f"127.0.0.1:{events_port}",
        # Chat's messages to numbers go in there (connectors/sip_messages.py).
        "WAC_GATEWAY_WS_LISTEN": f"127.0.0.1:{ws_port}",
    }
    async with running_stack(tmp_path / "data", env, gateway_ws=f"127.0.0.1:{ws_port}") as stack:
        core = stack.core
        await add_subscriber(core, "alice", PASSWORD, roles=["user", "pstn"], phone_numbers=["+34600111001"])
        await add_subscriber(core, "bob", PASSWORD, phone_numbers=["+34600111002"])
        running = await start_gateway(
            tmp_path, stack, ws_port=ws_port, jsonrpc_port=jsonrpc_port, events_port=events_port
        )
        try:
            yield running
        finally:
            await asyncio.to_thread(running.kamailio.stop)
            await asyncio.to_thread(running.rtpengine.stop)
