"""The HTTP fallback (aiohttp side of the edge) with httpx, against a real core."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.server import Core
from edges.wapi.http import MAX_EVENTS_PER_POLL
from edges.wapi.server import Edge
from tests.support.server import free_port
from tests.support.timing import seconds
from tests.wapi.conftest import EdgeFactory
from tests.wapi.support import PASSWORD, eventually, wapi
from tests.wapi.test_events import assert_contiguous, collect, numbers, publish

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def http(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds(2)) as client:
        yield client


def rpc(method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


async def login(http: httpx.AsyncClient, username: str = "alice", **headers: str) -> dict[str, Any]:
    response = await http.post(
        "/wapi/http", json=rpc("IdentityService.Login", {"username": username, "password": PASSWORD}), headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def attachments(core: Core) -> int:
    """Sessions attached to the core's StreamEvents streams: a long poll
    is one from its attach until it is answered."""
    assert core.event_streams is not None
    return sum(stream.attachments for stream in core.event_streams.streams)


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['accessToken']}"}


# -- JSON-RPC over POST ----------------------------------------------------------
async def test_login_then_call_with_the_bearer(http: httpx.AsyncClient) -> None:
    session = await login(http)
    response = await http.post("/wapi/http", json=rpc("IdentityService.GetSubscriber", {"username": "alice"}),
                               headers=bearer(session))  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": response.json()["result"]}
    assert response.json()["result"]["username"] == "alice"


async def test_call_without_a_token_is_16(http: httpx.AsyncClient) -> None:
    response = await http.post("/wapi/http", json=rpc("IdentityService.GetSubscriber", {"username": "alice"}))
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == 16 and error["data"]["reason"] == "NOT_LOGGED_IN"
    assert "Authorization" in error["message"]


async def test_batch_and_notifications(http: httpx.AsyncClient) -> None:
    session = await login(http)
    batch = [
        rpc("IdentityService.GetSubscriber", {"username": "alice"}, "a"),
        {"jsonrpc": "2.0", "method": "IdentityService.GetSubscriber", "params": {"username": "alice"}},
        rpc("No.Such", None, "b"),
    ]
    response = await http.post("/wapi/http", json=batch, headers=bearer(session))
    assert [reply["id"] for reply in response.json()] == ["a", "b"]
    only_notifications = [{"jsonrpc": "2.0", "method": "No.Such"}]
    response = await http.post("/wapi/http", json=only_notifications, headers=bearer(session))
    assert response.status_code == 204 and response.content == b""


async def test_malformed_body_is_a_json_rpc_parse_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/wapi/http", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32700


async def test_subscribe_over_post_points_to_the_long_poll(http: httpx.AsyncClient) -> None:
    session = await login(http)
    response = await http.post("/wapi/http", json=rpc("EventsService.Subscribe"), headers=bearer(session))
    error = response.json()["error"]
    assert error["code"] == -32601 and "/wapi/http/events" in error["message"]


async def test_too_large_body_is_413(start: EdgeFactory) -> None:
    edge = await start(max_message_bytes=2048)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        response = await http.post("/wapi/http", content=b"[" + b" " * 4096 + b"]")
        assert response.status_code == 413
        assert response.json()["error"]["code"] == 8
        assert "2048" in response.json()["error"]["message"]


async def test_revoked_token_is_401_with_the_json_rpc_error(core: Core, http: httpx.AsyncClient) -> None:
    session = await login(http)
    await core.identity.revoke_sessions("alice")
    response = await http.post("/wapi/http", json=rpc("IdentityService.GetSubscriber", {"username": "alice"}),
                               headers=bearer(session))  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 16
    polled = await http.get("/wapi/http/events", headers=bearer(session))
    assert polled.status_code == 401 and polled.json()["error"]["code"] == 16


async def test_client_address_is_forwarded_to_the_core(http: httpx.AsyncClient, edge: Edge) -> None:
    """Login throttling per client address sees X-Forwarded-For, over HTTP and WebSocket alike.

    Wrong passwords for ever new usernames: only the address can be
    throttled. Past three failures an address must wait (0.2 s, doubling).
    """
    attacker = forwarded_by_envoy(edge, "203.0.113.9")
    message = ""
    for attempt in range(8):
        body = rpc("IdentityService.Login", {"username": f"guess{attempt}", "password": "wrong"})
        message = (await http.post("/wapi/http", json=body, headers=attacker)).json()["error"]["message"]
        if "client address" in message:
            break
    assert "client address" in message
    # The WebSocket forwards the same header: within three attempts (fewer
    # than a fresh address needs) the same address is refused again.
    async with wapi(edge, additional_headers=attacker) as client:
        for attempt in range(3):
            error = await client.error("IdentityService.Login", {"username": f"ws{attempt}", "password": "wrong"})
            if error["code"] == 8:
                break
        assert error["code"] == 8 and "client address" in error["message"]
    # Another address is not affected.
    await login(http, **forwarded_by_envoy(edge, "198.51.100.7"))


def forwarded_by_envoy(edge: Edge, address: str) -> dict[str, str]:
    """Headers as Envoy sends them: the browser's address, and the hop key
    that makes the edge believe it (edges/wapi/forwarded.py)."""
    return {"X-Forwarded-For": address, "x-wac-hop": edge.client.hop_key}


# -- long-polled events -------------------------------------------------------------
async def test_events_need_a_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/wapi/http/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 16


@pytest.mark.parametrize("query", ["afterSeq=abc", "afterSeq=-1", "afterSeq=1&x=2", "afterSeq=99999999999999999999"])
async def test_events_refuse_a_malformed_query(http: httpx.AsyncClient, query: str) -> None:
    session = await login(http)
    response = await http.get(f"/wapi/http/events?{query}", headers=bearer(session))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 3


async def test_events_past_retention_are_400_with_11(http: httpx.AsyncClient) -> None:
    session = await login(http)
    response = await http.get("/wapi/http/events?afterSeq=99", headers=bearer(session))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 11 and "reload" in error["message"]
    assert error["data"]["status"] == "OUT_OF_RANGE"


async def test_long_poll_returns_when_an_event_arrives(core: Core, http: httpx.AsyncClient) -> None:
    session = await login(http)
    first = await http.get("/wapi/http/events?afterSeq=0", headers=bearer(session))
    after = max((int(e["seq"]) for e in first.json()["events"]), default=0)

    poll = asyncio.create_task(http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session)))
    await eventually(lambda: attachments(core) == 1)
    assert not poll.done(), "held until an event comes"
    await publish(core, 1, 3)
    # The burst arrives in one answer, well before the 25 s hold.
    response = await asyncio.wait_for(poll, seconds())
    assert response.status_code == 200
    events = response.json()["events"]
    assert numbers(events) == [1, 2, 3]


async def test_long_poll_returns_empty_after_the_hold(core: Core, start: EdgeFactory) -> None:
    edge = await start(long_poll_seconds=0.3)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        session = await login(http)
        # Polling brings the device online: take events until its own
        # AVAILABLE has come (a loaded machine may need more than one hold).
        after, online = 0, False
        while not online:
            drained = (await http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session))).json()
            after = max([after, *(int(e["seq"]) for e in drained["events"])])
            online = any(e.get("presenceChanged", {}).get("status") == "AVAILABLE" for e in drained["events"])
        response = await http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session))
        assert response.status_code == 200 and response.json() == {"events": []}


async def test_stop_answers_held_polls(core: Core, start: EdgeFactory) -> None:
    edge = await start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        session = await login(http)
        drained = await http.get("/wapi/http/events", headers=bearer(session))
        after = max((int(e["seq"]) for e in drained.json()["events"]), default=0)
        poll = asyncio.create_task(http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session)))
        await asyncio.sleep(0.2)
        await edge.stop()
        response = await asyncio.wait_for(poll, seconds())
        assert response.status_code == 200 and response.json() == {"events": []}


async def test_long_polls_ride_the_edge_s_one_event_stream(core: Core, http: httpx.AsyncClient) -> None:
    """A poll attaches to the shared StreamEvents stream for its duration:
    no Subscribe per poll, and nothing left attached once it is answered."""
    session = await login(http)
    drained = await http.get("/wapi/http/events", headers=bearer(session))
    after = max((int(e["seq"]) for e in drained.json()["events"]), default=0)
    polls = [
        asyncio.create_task(http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session))) for _ in range(2)
    ]
    servicer = core.event_streams
    assert servicer is not None
    await eventually(lambda: len(servicer.streams) == 1 and attachments(core) == 2)
    await publish(core, 1, 1)
    for response in await asyncio.gather(*polls):
        assert response.status_code == 200 and numbers(response.json()["events"]) == [1]
    await eventually(lambda: attachments(core) == 0)


async def test_a_burst_beyond_one_poll_follows_in_the_next(core: Core, http: httpx.AsyncClient) -> None:
    session = await login(http)
    await publish(core, 1, MAX_EVENTS_PER_POLL + 50)
    seen: list[dict[str, Any]] = []
    first = (await http.get("/wapi/http/events?afterSeq=0", headers=bearer(session))).json()["events"]
    assert len(first) == MAX_EVENTS_PER_POLL
    seen += first
    while len(numbers(seen)) < MAX_EVENTS_PER_POLL + 50:
        response = await http.get(f"/wapi/http/events?afterSeq={seen[-1]['seq']}", headers=bearer(session))
        assert response.status_code == 200, response.text
        seen += response.json()["events"]
    assert numbers(seen) == list(range(1, MAX_EVENTS_PER_POLL + 51))
    assert_contiguous(seen)


async def test_switching_between_websocket_and_http_loses_nothing(core: Core, edge: Edge) -> None:
    """Same session, same seq: WebSocket, then long polls, then WebSocket again."""
    async with wapi(edge) as client:
        session = await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        await publish(core, 1, 5)
        seen = await collect(client, 5)
    await publish(core, 6, 5)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        while len(numbers(seen)) < 10:
            after = seen[-1]["seq"]
            response = await http.get(f"/wapi/http/events?afterSeq={after}", headers=bearer(session))
            assert response.status_code == 200, response.text
            seen += response.json()["events"]
    await publish(core, 11, 5)
    async with wapi(edge, session["accessToken"]) as client:
        await client.result("EventsService.Subscribe", {"afterSeq": seen[-1]["seq"]})
        seen += await collect(client, 5)
    assert numbers(seen) == list(range(1, 16))
    assert_contiguous(seen)


# -- static files ---------------------------------------------------------------------
async def test_sdk_and_demo_are_served_when_built(start: EdgeFactory, tmp_path: Path) -> None:
    dist, demo = tmp_path / "dist", tmp_path / "demo"
    dist.mkdir()
    demo.mkdir()
    (dist / "wac.js").write_text("export const wac = 1;\n")
    (dist / "wac.umd.js").write_text("var wac = 1;\n")
    (demo / "index.html").write_text("<!doctype html><title>demo</title>\n")
    (demo / "app.css").write_text("body {}\n")
    (tmp_path / "secret.txt").write_text("no")
    edge = await start(sdk_dir=dist, demo_dir=demo)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        sdk = await http.get("/sdk/wac.js")
        assert sdk.status_code == 200 and sdk.text == "export const wac = 1;\n"
        assert "javascript" in sdk.headers["content-type"]
        assert (await http.get("/sdk/wac.umd.js")).text == "var wac = 1;\n"
        index = await http.get("/")
        assert index.status_code == 200 and "demo" in index.text
        assert (await http.get("/app.css")).text == "body {}\n"
        for path in ("/sdk/nope.js", "/sdk/%2e%2e/secret.txt", "/..%2Fsecret.txt", "/wapi"):
            missing = await http.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["error"]["code"] == 5


async def test_missing_builds_are_a_clear_404(start: EdgeFactory, tmp_path: Path) -> None:
    edge = await start(sdk_dir=tmp_path / "none", demo_dir=tmp_path / "none")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        for path in ("/sdk/wac.js", "/"):
            response = await http.get(path)
            assert response.status_code == 404
            assert "not built" in json.loads(response.text)["error"]["message"]


async def test_rate_limit_applies_per_client_address(start: EdgeFactory) -> None:
    edge = await start(rate_per_second=1, rate_burst=2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        batch = [rpc("No.Such", None, n) for n in range(3)]
        replies = (await http.post("/wapi/http", json=batch, headers=forwarded_by_envoy(edge, "192.0.2.1"))).json()
        assert [r["error"]["code"] for r in replies] == [-32601, -32601, -32000]
        assert replies[-1]["error"]["data"]["retryAfter"] > 0
        other = (
            await http.post("/wapi/http", json=rpc("No.Such"), headers=forwarded_by_envoy(edge, "192.0.2.2"))
        ).json()
        assert other["error"]["code"] == -32601


async def test_core_down_is_14(start: EdgeFactory) -> None:
    edge = await start(core_address=f"127.0.0.1:{free_port()}")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds()) as http:
        body = rpc("IdentityService.Login", {"username": "alice", "password": PASSWORD})
        response = await http.post("/wapi/http", json=body)
        assert response.status_code == 200 and response.json()["error"]["code"] == 14
        polled = await http.get("/wapi/http/events", headers={"Authorization": "Bearer whatever"})
        assert polled.status_code == 503
        assert polled.json()["error"] == {
            "code": 14,
            "message": "the wac core is unavailable; try again shortly",
            "data": {"status": "UNAVAILABLE"},
        }
