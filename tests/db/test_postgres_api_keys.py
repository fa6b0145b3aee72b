"""API keys' lifecycle and the issued-session checks on PostgreSQL: the
migration from 0001 keeps existing keys, the partial unique index lets a
rotated key share its name, and revocation reaches the running core."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from core.db.engine import sync_url
from core.db.migrate import upgrade
from core.failures import AlreadyExists
from core.identity import apikeys
from tests.support.core import add_subscriber, login, running_core
from wac.v1 import identity_pb2, identity_pb2_grpc


async def accepted(port: int, key: str) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        try:
            await stub.VerifyToken(
                identity_pb2.VerifyTokenRequest(token="a.b.c"), metadata=(("authorization", f"Bearer {key}"),)
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False
        return True


async def test_keys_from_before_the_migration_survive_and_rotate(tmp_path: Path, postgres_url: str) -> None:
    upgrade(postgres_url, "0001")
    engine = create_engine(sync_url(postgres_url))
    old = "wac_00000000000000aa_old-secret"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_keys VALUES ('00000000000000aa', 'gateway', :hash, '[\"identity.verify\"]', 1.0, NULL)"
            ),
            {"hash": apikeys.digest("old-secret")},
        )
    engine.dispose()
    async with running_core(tmp_path / "data", {"WAC_CORE_DATABASE_URL": postgres_url}) as core:
        assert core.engine.dialect.name == "postgresql"
        [row] = [r for r in await core.identity.list_api_keys() if r.name == "gateway"]
        assert row.last_used_time is None and await accepted(core.port, old)
        new = await core.identity.rotate_api_key("gateway", 60)
        assert await accepted(core.port, new) and await accepted(core.port, old)
        rows = [r for r in await core.identity.list_api_keys() if r.name == "gateway"]
        assert len(rows) == 2
        with pytest.raises(AlreadyExists):  # one live key per name
            await core.identity.create_api_key("gateway", ["identity.verify"])
        await core.identity.revoke_api_key("gateway")
        assert not await accepted(core.port, new) and not await accepted(core.port, old)
        # Revoked names may be taken again.
        again = await core.identity.create_api_key("gateway", ["identity.verify"])
        assert await accepted(core.port, again)
        key = await core.identity.provision_service_key("edge", ["identity.verify"], core.config.data_dir / "k")
        assert await core.identity.provision_service_key("edge", ["identity.verify"], core.config.data_dir / "k") == key


async def test_sessions_are_known_after_a_restart(tmp_path: Path, postgres_url: str) -> None:
    env = {"WAC_CORE_DATABASE_URL": postgres_url}
    async with running_core(tmp_path / "data", env) as core:
        await add_subscriber(core, "alice")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
    async with running_core(tmp_path / "data", env) as core:
        gateway = await core.identity.create_api_key("gateway", ["identity.verify"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            answer = await stub.VerifyToken(
                identity_pb2.VerifyTokenRequest(token=session.access_token),
                metadata=(("authorization", f"Bearer {gateway}"),),
            )
        assert answer.active
