"""The private signing keys at rest: sealed under identity.key_seal_secret,
clear keys sealed at the next start, and a core that cannot open them stops
with a clear message instead of a traceback."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc

from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SECRET = base64.b64encode(os.urandom(32)).decode()


def stored_keys(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "wac.sqlite3") as db:
        return db.execute("SELECT kid, private_jwk FROM signing_keys").fetchall()


def is_clear(jwk: str) -> bool:
    return jwk.startswith("{") and '"d"' in jwk


async def token_verifies(port: int, gateway: str, token: str) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        answer = await stub.VerifyToken(
            identity_pb2.VerifyTokenRequest(token=token), metadata=(("authorization", f"Bearer {gateway}"),)
        )
        return answer.active


async def test_with_a_secret_the_private_key_is_stored_sealed_and_signs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_core(data, {"WAC_IDENTITY_KEY_SEAL_SECRET": SECRET}) as core:
        await add_subscriber(core, "alice")
        gateway = await api_key(core, "gateway", "identity.verify")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
        assert await token_verifies(core.port, gateway, session.access_token)
        assert SECRET not in repr(core.config)  # a logged configuration shows no secret
    [(kid, stored)] = stored_keys(data)
    assert stored.startswith("v1.") and not is_clear(stored) and kid not in stored
    # A restart opens it again: the token it signed still verifies.
    async with running_core(data, {"WAC_IDENTITY_KEY_SEAL_SECRET": SECRET}) as core:
        assert await token_verifies(core.port, gateway, session.access_token)
    assert stored_keys(data) == [(kid, stored)]


async def test_clear_keys_are_sealed_at_the_next_start_with_a_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_core(data) as core:
        await add_subscriber(core, "alice")
        gateway = await api_key(core, "gateway", "identity.verify")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            session = await login(channel, "alice")
    [(kid, clear)] = stored_keys(data)
    assert is_clear(clear)  # the attack: any reader of the file holds the key
    async with running_core(data, {"WAC_IDENTITY_KEY_SEAL_SECRET": SECRET}) as core:
        [(same_kid, sealed)] = stored_keys(data)
        assert same_kid == kid and not is_clear(sealed)
        assert await token_verifies(core.port, gateway, session.access_token)


def run_core(data: Path, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WAC_DATA_DIR": str(data), "WAC_CORE_LISTEN": "127.0.0.1:0"}
    env.pop("WAC_IDENTITY_KEY_SEAL_SECRET", None)
    if secret is not None:
        env["WAC_IDENTITY_KEY_SEAL_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "cli", "core"],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(30),
    )


async def test_a_wrong_missing_or_malformed_secret_stops_the_core_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_core(data, {"WAC_IDENTITY_KEY_SEAL_SECRET": SECRET}):
        pass
    before = stored_keys(data)
    wrong = base64.b64encode(os.urandom(32)).decode()
    for secret, expected in (
        (wrong, "is not the one it was sealed with"),
        (None, "is not set"),
        ("not base64 at all", "must be 32 random bytes in base64"),
    ):
        result = run_core(data, secret)
        output = result.stdout + result.stderr
        assert result.returncode == 78, output  # EX_CONFIG: the supervisor does not retry it
        assert expected in output and "WAC_IDENTITY_KEY_SEAL_SECRET" in output, output
        assert "Traceback" not in output, output
        assert SECRET not in output and wrong not in output  # secrets are never printed
    assert stored_keys(data) == before  # nothing was replaced by a fresh key
