"""A real core on a real socket (port 0), with its own data directory."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from core.clock import SYSTEM_CLOCK, Clock
from core.server import Core, build_core
from settings.config import Config, load_config
from tests.support.passwords import TEST_ARGON2
from tests.support.server import free_port
from wac.v1 import identity_pb2, identity_pb2_grpc


def test_config(data_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    """Defaults for tests: fast password-throttle, short retention where asked."""
    base = {
        "WAC_DATA_DIR": str(data_dir),
        "WAC_CORE_LISTEN": "127.0.0.1:0",
        "WAC_CORE_SHUTDOWN_GRACE": "0.5",
        "WAC_IDENTITY_THROTTLE_DELAY": "0.2",
        "WAC_IDENTITY_REVOCATION_POLL": "0.2",
        # Not the default port: a revocation in a test must not reach the
        # Kamailio of a `make run` on this machine (its registrations).
        "WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{free_port()}",
        # Nor its call reports into a test's history.
        "WAC_GATEWAY_EVENTS_LISTEN": f"127.0.0.1:{free_port()}",
        # Nor its Janus's rooms: a test's Janus (tests/support/janus.py) says where it is.
        "WAC_CONFERENCES_JANUS_API_LISTEN": f"127.0.0.1:{free_port()}",
        # Nor its gateway's WebSocket: chat's messages to numbers go in there.
        "WAC_GATEWAY_WS_LISTEN": f"127.0.0.1:{free_port()}",
        **TEST_ARGON2,
    }
    return load_config(None, {**base, **(env or {})})


@asynccontextmanager
async def running_core(
    data_dir: Path, env: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Core]:
    core = await build_core(test_config(data_dir, env), clock=clock)
    try:
        yield core
    finally:
        await core.stop(0.2)


@dataclasses.dataclass
class Client:
    """A gRPC client bound to one credential."""

    channel: grpc.aio.Channel
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def stub(self, stub_class: Any) -> Any:
        return stub_class(self.channel)


async def add_subscriber(core: Core, username: str, password: str = "correct horse", **fields: Any) -> None:
    await core.identity.create(identity_pb2.Subscriber(username=username, password=password, **fields))


async def api_key(core: Core, name: str, *scopes: str) -> str:
    return await core.identity.create_api_key(name, list(scopes))


async def login(
    channel: grpc.aio.Channel, username: str, password: str = "correct horse", device: str = "test"
) -> identity_pb2.Session:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    return await stub.Login(identity_pb2.LoginRequest(username=username, password=password, device_name=device))
