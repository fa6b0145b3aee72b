"""Janus as `wac janus` runs it (tests/support/janus.py): the VideoRoom
alone, loopback listeners, and signed tokens; rooms made, policed and ended
by the connector (connectors/janus.py); browsers' WebSocket through /janus.
Every test talks to a real Janus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from connectors.janus import JanusBridge, JanusError, JanusRooms, sign_token
from core import failures
from settings.januskey import JanusSecrets, janus_secrets
from tests.support.janus import RunningJanus, running_janus
from tests.support.stack import running_stack
from tests.support.timing import seconds


@pytest.fixture
async def janus(tmp_path: Path) -> AsyncIterator[RunningJanus]:
    async with running_janus(tmp_path / "data") as running:
        yield running


@pytest.fixture
def secrets(janus: RunningJanus) -> JanusSecrets:
    return janus_secrets(janus.config)


@pytest.fixture
async def rooms(janus: RunningJanus, secrets: JanusSecrets) -> AsyncIterator[JanusRooms]:
    connector = JanusRooms(janus.api_url, token_secret=secrets.token, room_admin_key=secrets.room_admin)
    yield connector
    await connector.close()


async def post(url: str, body: dict[str, object]) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=seconds()) as http:
        answer: dict[str, object] = (await http.post(url, json={"transaction": "t", **body})).json()
        return answer


def error_code(answer: dict[str, object]) -> object:
    error = answer.get("error")
    return error.get("code") if isinstance(error, dict) else None


async def test_janus_loads_the_videoroom_alone_and_admits_only_tokens_wac_signed(
    janus: RunningJanus, secrets: JanusSecrets
) -> None:
    async with httpx.AsyncClient(timeout=seconds()) as http:
        info = (await http.get(f"{janus.api_url}/info")).json()
    assert list(info["plugins"]) == ["janus.plugin.videoroom"]
    assert set(info["transports"]) == {"janus.transport.http", "janus.transport.websockets"}
    assert info["auth_token"] is True

    later = time.time() + 60
    refused = [
        {},  # no token
        {"token": sign_token("not the secret", later)},  # forged
        {"token": sign_token(secrets.token, time.time() - 1)},  # expired
        {"token": sign_token(secrets.room_admin, later)},  # the other derived secret
    ]
    for extra in refused:
        assert error_code(await post(janus.api_url, {"janus": "create", **extra})) == 403, extra
    created = await post(janus.api_url, {"janus": "create", "token": sign_token(secrets.token, later)})
    assert created["janus"] == "success", created


async def test_a_token_is_good_for_the_videoroom_only(janus: RunningJanus, secrets: JanusSecrets) -> None:
    token = sign_token(secrets.token, time.time() + 60)
    session = await post(janus.api_url, {"janus": "create", "token": token})
    session_id = session["data"]["id"]  # type: ignore[index]
    attach = await post(
        f"{janus.api_url}/{session_id}", {"janus": "attach", "plugin": "janus.plugin.echotest", "token": token}
    )
    assert attach["janus"] == "error", attach  # not loaded, and not in the token either


async def test_rooms_are_made_private_policed_and_ended_by_the_connector(rooms: JanusRooms) -> None:
    room = await rooms.create_room("conf-1", video=True)
    assert 0 < room < 2**53
    assert await rooms.participants(room) == []
    token = await rooms.admit(room)
    assert token
    await rooms.revoke(room, token)
    # Kicking someone who is not there, and ending twice, are not errors.
    await rooms.kick(room, 12345)
    await rooms.destroy_room(room)
    await rooms.destroy_room(room)
    with pytest.raises(JanusError) as gone:
        await rooms.participants(room)
    assert gone.value.code == 426


async def test_a_room_is_not_made_without_the_admin_key(janus: RunningJanus, secrets: JanusSecrets) -> None:
    outsider = JanusRooms(janus.api_url, token_secret=secrets.token, room_admin_key="guessed")
    try:
        with pytest.raises(JanusError) as refused:
            await outsider.create_room("conf-2", video=False)
        assert refused.value.code == 433  # Unauthorized (wrong admin_key)
    finally:
        await outsider.close()


async def test_a_room_is_neither_changed_nor_ended_without_its_secret(
    janus: RunningJanus, secrets: JanusSecrets, rooms: JanusRooms
) -> None:
    room = await rooms.create_room("conf-3", video=True)
    # A participant holds a token for the VideoRoom, not the room's secret.
    intruder = JanusRooms(janus.api_url, token_secret=secrets.token, room_admin_key="guessed")
    try:
        with pytest.raises(JanusError) as refused:
            await intruder.destroy_room(room)
        assert refused.value.code == 433
        with pytest.raises(JanusError):
            await intruder.admit(room)
    finally:
        await intruder.close()
    assert await rooms.participants(room) == []  # still there
    await rooms.destroy_room(room)


async def test_an_unreachable_janus_is_a_janus_error(secrets: JanusSecrets) -> None:
    nowhere = JanusRooms("http://127.0.0.1:9/janus", token_secret=secrets.token, room_admin_key=secrets.room_admin)
    try:
        with pytest.raises(JanusError, match="unreachable"):
            await nowhere.create_room("conf-4", video=True)
    finally:
        await nowhere.close()


def test_the_configuration_is_private_and_the_secret_never_on_the_command_line(janus: RunningJanus) -> None:
    folder = janus.config.data_dir / "janus"
    assert folder.stat().st_mode & 0o777 == 0o700
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (janus.config.data_dir / "janus.key").stat().st_mode & 0o777 == 0o600
    token_secret = janus_secrets(janus.config).token
    command = Path(f"/proc/{janus.process.pid}/cmdline").read_bytes()
    assert b"janus" in command
    assert token_secret.encode() not in command
    assert token_secret not in janus.log.read_text(errors="replace")


async def test_browsers_reach_janus_through_the_front_door(tmp_path: Path, janus: RunningJanus) -> None:
    async with running_stack(tmp_path / "stack", janus_ws=janus.ws_listen) as stack:
        url = f"ws://127.0.0.1:{stack.port}/janus"
        async with websockets.connect(url, subprotocols=["janus-protocol"]) as socket:
            assert socket.subprotocol == "janus-protocol"
            await socket.send(json.dumps({"janus": "info", "transaction": "i"}))
            info = json.loads(await asyncio.wait_for(socket.recv(), seconds()))
            assert info["janus"] == "server_info" and info["auth_token"] is True
            await socket.send(json.dumps({"janus": "create", "transaction": "c"}))
            refused = json.loads(await asyncio.wait_for(socket.recv(), seconds()))
            assert refused["error"]["code"] == 403


async def test_the_core_sees_a_janus_that_does_not_answer_as_unavailable(secrets: JanusSecrets) -> None:
    bridge = JanusBridge(
        JanusRooms("http://127.0.0.1:9/janus", token_secret=secrets.token, room_admin_key=secrets.room_admin)
    )
    try:
        with pytest.raises(failures.Unavailable, match="media server did not answer"):
            await bridge.create_room("conf-5", video=True)
        # Tokens are signed here, Janus or not.
        assert (await bridge.join_token(time.time() + 60)).count(",") == 2
    finally:
        await bridge.close()
