"""The WAPI through the real Envoy front door: /wapi upgrades go to the
edge's WebSocket port, /wapi/http and /sdk/ to its HTTP port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from core.server import Core
from edges.wapi.server import Edge
from tests.support.stack import front_door as envoy_in_front
from tests.support.timing import seconds
from tests.wapi.support import PASSWORD, WapiClient, close_code
from tests.wapi.test_events import collect, numbers, publish

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def front_door(edge: Edge, core: Core, tmp_path: Path) -> AsyncIterator[int]:
    """A real Envoy in front of the test's core and edge; its listening port."""
    async with envoy_in_front(core.port, edge, tmp_path) as port:
        yield port


async def test_websocket_through_envoy(front_door: int, core: Core) -> None:
    async with connect(f"ws://127.0.0.1:{front_door}/wapi", open_timeout=seconds()) as ws:
        client = WapiClient(ws)
        session = await client.login("alice")
        assert await client.result("EventsService.Subscribe", {}) == {}
        await publish(core, 1, 3)
        assert numbers(await collect(client, 3)) == [1, 2, 3]
        await core.identity.revoke_sessions("alice")
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
