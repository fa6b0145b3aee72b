"""The WAPI through the real Envoy front door: /wapi upgrades go to the
edge's WebSocket port, /wapi/http and /sdk/ to its HTTP port."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from core.server import Core
from edges.wapi.server import Edge
from tests.support.server import free_port
from tests.support.timing import seconds
from tests.wapi.support import PASSWORD, WapiClient, close_code
from tests.wapi.test_events import collect, numbers, publish
from wac import envoy

pytestmark = pytest.mark.usefixtures("alice")

ROOT = Path(__file__).resolve().parents[2]


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


@pytest.fixture
async def front_door(edge: Edge, core: Core, tmp_path: Path) -> AsyncIterator[int]:
    """A real Envoy in front of the test's core and edge; its listening port."""
    try:
        envoy.envoy_binary()
    except envoy.EnvoyError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Envoy: {error}")
        pytest.skip(str(error))
    if not (ROOT / "build" / "wac.pb").is_file():
        pytest.fail("build/wac.pb is missing: run python tools/gen_proto.py first")
    listen, admin = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        envoy.render_config(
            listen_port=listen,
            core_address=f"127.0.0.1:{core.port}",
            edge_address=f"127.0.0.1:{edge.ws_port}",
            edge_http_address=f"127.0.0.1:{edge.http_port}",
            admin_port=admin,
        )
    )
    log = tmp_path / "envoy.log"
    process = spawn(envoy.envoy_command(config, log_level="warning", concurrency=1), log)
    try:
        try:
            await asyncio.to_thread(envoy.wait_until_live, process, admin, timeout=seconds(6))
        except envoy.EnvoyError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
        yield listen
    finally:
        await asyncio.to_thread(envoy.stop_envoy, process, grace=seconds())


async def test_websocket_through_envoy(front_door: int, core: Core) -> None:
    async with connect(f"ws://127.0.0.1:{front_door}/wapi", open_timeout=seconds()) as ws:
        client = WapiClient(ws)
        session = await client.login("alice")
        assert await client.result("EventsService.Subscribe", {}) == {}
        await publish(core, 1, 3)
        assert numbers(await collect(client, 3)) == [1, 2, 3]
        await core.identity._revoke_all("alice", "revoked")
        events = await client.events_until("sessionRevoked")
        assert events[-1]["sessionRevoked"]["sessionId"] == session["sessionId"]
        assert close_code(await client.closed()) == 4401


async def test_http_fallback_through_envoy(front_door: int, core: Core) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front_door}", timeout=seconds(2)) as http:
        login = {"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login",
                 "params": {"username": "alice", "password": PASSWORD}}  # fmt: skip
        session = (await http.post("/wapi/http", json=login)).json()["result"]
        headers = {"Authorization": f"Bearer {session['accessToken']}"}
        drained = (await http.get("/wapi/http/events", headers=headers)).json()["events"]
        after = drained[-1]["seq"] if drained else "0"
        poll = asyncio.create_task(http.get(f"/wapi/http/events?afterSeq={after}", headers=headers))
        await asyncio.sleep(0.2)
        await publish(core, 1, 2)
        response = await poll
        assert response.status_code == 200
        assert numbers(response.json()["events"]) == [1, 2]
        missing = await http.get("/wapi/http/events")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == 16
        sdk = await http.get("/sdk/no-such-file.js")
        assert sdk.status_code == 404 and sdk.json()["error"]["code"] == 5
