"""`wac admin apikey` against a running core: list, revoke (refused by the
core within a second), rotate (both keys work, the old one until its grace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from core.server import Core
from tests.support.cli import cli_env, wac_async
from tests.support.core import running_core
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    # The default poll, as in production: "within a second" is measured against it.
    async with running_core(tmp_path / "data", {"WAC_IDENTITY_REVOCATION_POLL": "0.5"}) as running:
        yield running


async def wac(core: Core, *args: str) -> list[str]:
    """Run the real CLI on the core's data dir (without blocking the core's loop)."""
    result = await wac_async("admin", "apikey", *args, env=cli_env(core.config.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


async def accepted(core: Core, key: str) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        try:
            await stub.VerifyToken(
                identity_pb2.VerifyTokenRequest(token="a.b.c"), metadata=(("authorization", f"Bearer {key}"),)
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            return False
        return True


async def refused_within(core: Core, key: str, limit: float) -> float:
    """Seconds until the core refuses ``key``; fails past ``limit``."""
    started = time.monotonic()
    while await accepted(core, key):
        assert time.monotonic() - started < limit, f"still accepted after {limit:.1f} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_revoke_is_refused_by_the_running_core_within_a_second(core: Core) -> None:
    key = (await wac(core, "create", "billing", "--scope", "identity.verify"))[-1]
    assert await accepted(core, key)  # now in the core's cache
    lines = await wac(core, "revoke", "billing")
    assert "revoked" in lines[-1]
    await refused_within(core, key, seconds(0.2))  # 1 s (the timeout scale aside)
    listed = [line.split("\t") for line in await wac(core, "list")]
    assert listed[0] == ["NAME", "KEY ID", "SCOPES", "CREATED", "LAST USED", "REVOKED"]
    [row] = [row for row in listed[1:] if row[0] == "billing"]
    assert row[2] == "identity.verify" and row[5].endswith("Z")
    assert key not in "\n".join(await wac(core, "list"))


async def test_rotate_both_keys_work_then_the_old_one_stops_after_the_grace(core: Core) -> None:
    old = (await wac(core, "create", "gateway", "--scope", "identity.verify", "--scope", "subscribers.read"))[-1]
    assert await accepted(core, old)
    # Long enough that the old key still works when the CLI has exited and
    # the checks below ran, on a loaded machine (a 2 s grace once ran out
    # before them: the CLI's own start and exit took most of it).
    grace = seconds(1.2)
    lines = await wac(core, "rotate", "gateway", "--grace", str(grace))
    rotated_at = time.monotonic()
    new = lines[-1]
    assert new.startswith("wac_") and new != old and old not in "\n".join(lines)
    assert await accepted(core, new) and await accepted(core, old)
    listed = [line.split("\t") for line in (await wac(core, "list"))[1:]]
    rows = {row[1]: row for row in listed if row[0] == "gateway"}
    assert len(rows) == 2
    assert {row[2] for row in rows.values()} == {"identity.verify,subscribers.read"}  # scopes carried over
    assert rows[new.split("_")[1]][5] == "-"
    assert rows[old.split("_")[1]][5].startswith("rotated, works until")
    # The old key works through its grace, then stops; the new one goes on.
    waited = await refused_within(core, old, grace + seconds(0.3))
    assert time.monotonic() - rotated_at >= grace - 0.5, waited
    assert await accepted(core, new)


async def test_last_use_is_recorded_in_the_background_not_per_call(core: Core) -> None:
    key = (await wac(core, "create", "metrics", "--scope", "identity.verify"))[-1]
    for _ in range(5):
        assert await accepted(core, key)
    [row] = [line.split("\t") for line in await wac(core, "list") if line.startswith("metrics\t")]
    assert row[4] == "never"  # nothing written per call
    await core.identity.flush_api_key_uses()  # what the background task does once a minute
    [row] = [line.split("\t") for line in await wac(core, "list") if line.startswith("metrics\t")]
    assert row[4].endswith("Z")


async def test_revoking_or_rotating_an_unknown_name_fails_plainly(core: Core) -> None:
    for action in ("revoke", "rotate"):
        result = await wac_async("admin", "apikey", action, "nobody", env=cli_env(core.config.data_dir))
        assert result.returncode == 1
        assert "no API key named 'nobody'" in result.stderr and "Traceback" not in result.stderr
