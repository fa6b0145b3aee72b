"""The gateway's API key: provisioned by the core while [gateway] is
enabled, with exactly its two scopes, kept only in a 0600 file that the
gateway's side reads (waiting for a core that is starting)."""

from __future__ import annotations

import logging
import stat
import threading
import time
from pathlib import Path

import grpc
import pytest

from settings.config import ConfigError
from settings.gatewaykey import gateway_key_path, read_gateway_key
from tests.support.core import running_core
from tests.support.core import test_config as config_for
from wac.v1 import identity_pb2, identity_pb2_grpc

KEY = "wac_0123456789abcdef_s3cret-value"


async def test_the_core_provisions_the_key_with_its_scopes_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_core(tmp_path / "data") as core:
        path = gateway_key_path(core.config)
        key = read_gateway_key(core.config, wait=0)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        [row] = [row for row in await core.identity.list_api_keys() if row.name == "sip-gateway"]
        assert row.revoke_time is None
        assert sorted(row.scopes) == ["identity.verify", "messages.deliver", "numbers.lookup"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            await _verify_with(channel, key)  # identity.verify: accepted
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await identity_pb2_grpc.IdentityServiceStub(channel).ListSubscribers(
                    identity_pb2.ListSubscribersRequest(), metadata=(("authorization", f"Bearer {key}"),)
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A restart keeps the key (the gateway's configuration need not change).
    async with running_core(tmp_path / "data") as core:
        assert read_gateway_key(core.config, wait=0) == key
    assert key not in caplog.text


async def test_an_operators_key_named_gateway_survives_provisioning(tmp_path: Path) -> None:
    # The README's quick start creates a key "gateway" for the operator's own gateway.
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_ENABLED": "false"}) as core:
        operators = await core.identity.create_api_key("gateway", ["identity.verify"])
    async with running_core(tmp_path / "data") as core:
        assert read_gateway_key(core.config, wait=0) != operators
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            await _verify_with(channel, operators)


async def test_a_disabled_gateway_gets_no_key(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_ENABLED": "false"}) as core:
        assert not gateway_key_path(core.config).exists()
        assert not [row for row in await core.identity.list_api_keys() if row.name == "sip-gateway"]
        with pytest.raises(ConfigError, match=r"gateway is disabled"):
            read_gateway_key(core.config, wait=0)


async def test_a_configured_key_wins_and_the_core_makes_none(tmp_path: Path) -> None:
    # Several cores on one database share a key the operator made.
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_ENABLED": "false"}) as core:
        made = await core.identity.create_api_key(
            "sip-gateway", ["identity.verify", "numbers.lookup", "messages.deliver"]
        )
    async with running_core(tmp_path / "data", {"WAC_GATEWAY_API_KEY": made}) as core:
        assert not gateway_key_path(core.config).exists()
        assert read_gateway_key(core.config, wait=0) == made
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            await _verify_with(channel, made)  # not ended by a provisioning


def test_the_key_the_core_writes_is_waited_for(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    writer = threading.Timer(0.2, lambda: gateway_key_path(config).write_text(KEY + "\n"))
    writer.start()
    try:
        assert read_gateway_key(config, wait=5) == KEY
    finally:
        writer.cancel()


def test_no_key_in_time_fails_clearly(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"no gateway key: .*gateway.key did not appear within 0.2 s. Start the core"):
        read_gateway_key(config, wait=0.2)
    assert time.monotonic() - started < 2


async def _verify_with(channel: grpc.aio.Channel, key: str) -> None:
    response = await identity_pb2_grpc.IdentityServiceStub(channel).VerifyToken(
        identity_pb2.VerifyTokenRequest(token="a.b.c"), metadata=(("authorization", f"Bearer {key}"),)
    )
    assert not response.active
