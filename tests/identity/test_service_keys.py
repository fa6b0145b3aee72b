"""A wac-internal service's API key, provisioned into a 0600 file of the
data dir: reused while it authenticates with its scopes, replaced (and the
old one refused) when the file is lost or tampered with."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest

from core.server import Core
from wac.v1 import identity_pb2, identity_pb2_grpc

SCOPES = ["identity.verify"]


async def authenticates(channel: grpc.aio.Channel, key: str) -> bool:
    """Does the running core accept ``key`` on a method its scope allows?"""
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    try:
        await stub.VerifyToken(
            identity_pb2.VerifyTokenRequest(token="a.b.c"), metadata=(("authorization", f"Bearer {key}"),)
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return False
    return True


async def test_first_call_writes_the_key_0600_and_the_second_returns_it(core: Core, channel) -> None:
    path = core.config.data_dir / "edge.key"
    key = await core.identity.provision_service_key("edge", SCOPES, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key + "\n"
    assert not list(path.parent.glob(".edge.key*"))  # no temporary file left
    assert await authenticates(channel, key)
    assert await core.identity.provision_service_key("edge", SCOPES, path) == key
    [row] = [row for row in await core.identity.list_api_keys() if row.name == "edge"]
    assert row.revoke_time is None and row.scopes == tuple(SCOPES)


@pytest.mark.parametrize("damage", ["delete", "tamper", "garbage"])
async def test_a_lost_or_tampered_file_gets_a_new_key_and_the_old_one_is_refused(
    core: Core, channel, damage: str
) -> None:
    path = core.config.data_dir / "edge.key"
    old = await core.identity.provision_service_key("edge", SCOPES, path)
    if damage == "delete":
        path.unlink()
    elif damage == "tamper":
        path.write_text(old[:-3] + ("AAA" if not old.endswith("AAA") else "BBB") + "\n")
    else:
        path.write_bytes(b"\xff" * 5000)
    new = await core.identity.provision_service_key("edge", SCOPES, path)
    assert new != old
    assert path.read_text() == new + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await authenticates(channel, new)
    assert not await authenticates(channel, old)


async def test_other_scopes_get_a_new_key(core: Core, channel) -> None:
    path = core.config.data_dir / "edge.key"
    old = await core.identity.provision_service_key("edge", SCOPES, path)
    new = await core.identity.provision_service_key("edge", [*SCOPES, "subscribers.read"], path)
    assert new != old
    assert not await authenticates(channel, old)
    assert await authenticates(channel, new)


async def test_a_key_of_another_name_in_the_file_is_not_taken(core: Core, tmp_path: Path) -> None:
    other = await core.identity.create_api_key("somebody", SCOPES)
    path = core.config.data_dir / "edge.key"
    path.write_text(other + "\n")
    key = await core.identity.provision_service_key("edge", SCOPES, path)
    assert key != other
