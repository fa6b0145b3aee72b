"""The core's and the edge's /metrics after real WAPI traffic: what an
operator would read there. Counters are compared before and after, as the
metrics are the process's (other tests in this process add to them); the
gauges of a running core and edge are their own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from core import metrics as core_metrics
from core.identity import logins
from core.server import Core
from edges.wapi import metrics as edge_metrics
from edges.wapi.server import Edge, start_edge
from tests.calls.support import SDP
from tests.calls.test_wapi import call_event, online
from tests.metrics.support import scrape, value
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.timing import seconds
from tests.wapi.conftest import edge_config
from tests.wapi.support import PASSWORD, close_code, eventually, wapi
from tests.wapi.test_events import publish
from wac.v1 import identity_pb2, identity_pb2_grpc

LOGIN = "/wac.v1.IdentityService/Login"


@pytest.fixture
async def edge(core: Core, tmp_path: Path) -> AsyncIterator[Edge]:
    started = await start_edge(edge_config(tmp_path / "data", core.port))
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def core_port() -> Iterator[int]:
    listener = core_metrics.listen("127.0.0.1:0")
    assert listener is not None
    yield listener.port
    listener.close()


@pytest.fixture
def edge_port() -> Iterator[int]:
    listener = edge_metrics.listen("127.0.0.1:0")
    assert listener is not None
    yield listener.port
    listener.close()


async def test_logins_and_sockets(core: Core, edge: Edge, core_port: int, edge_port: int) -> None:
    await add_subscriber(core, "alice")
    core_before, edge_before = await scrape(core_port), await scrape(edge_port)
    assert value(edge_before, "wac_edge_websockets") == 0
    async with wapi(edge) as alice:
        await alice.login("alice")
        error = await alice.error("IdentityService.Login", {"username": "alice", "password": "wrong"})
        assert error["data"]["status"] == "UNAUTHENTICATED"
        core_after, edge_after = await scrape(core_port), await scrape(edge_port)
        assert value(edge_after, "wac_edge_websockets") == 1
    await eventually(lambda: edge.connections == 0)
    edge_closed = await scrape(edge_port)

    def delta(name: str, **labels: str) -> float:
        return value(core_after, name, **labels) - value(core_before, name, **labels)

    assert delta("wac_core_logins_total", outcome="success") == 1
    assert delta("wac_core_logins_total", outcome="bad_credentials") == 1
    assert delta("wac_core_rpc_requests_total", method=LOGIN, code="OK") == 1
    assert delta("wac_core_rpc_requests_total", method=LOGIN, code="UNAUTHENTICATED") == 1
    assert delta("wac_core_rpc_duration_seconds_count", method=LOGIN) == 2

    def edge_delta(name: str, **labels: str) -> float:
        return value(edge_after, name, **labels) - value(edge_before, name, **labels)

    login = "IdentityService.Login"
    assert edge_delta("wac_edge_wapi_requests_total", method=login, code="OK") == 1
    assert edge_delta("wac_edge_wapi_requests_total", method=login, code="UNAUTHENTICATED") == 1
    assert edge_delta("wac_edge_wapi_request_duration_seconds_count", method=login) == 2
    assert value(edge_closed, "wac_edge_websockets") == 0
    closes = value(edge_closed, "wac_edge_websocket_closes_total", code="1000")
    assert closes - value(edge_before, "wac_edge_websocket_closes_total", code="1000") == 1


async def test_a_call_set_up_and_ended(core: Core, edge: Edge, core_port: int, edge_port: int) -> None:
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    before, edge_before = await scrape(core_port), await scrape(edge_port)
    async with wapi(edge) as alice, wapi(edge) as bob:
        await online(core, alice, "alice")
        await online(core, bob, "bob")
        assert value(await scrape(edge_port), "wac_edge_event_subscriptions") == 2

        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": {"type": "OFFER", "sdp": SDP}})
        assert value(await scrape(core_port), "wac_core_calls", state="RINGING") == 1
        assert (await call_event(bob))[0] == "callInvited"
        answer = {"callId": call["callId"], "answer": {"type": "ANSWER", "sdp": SDP}}
        await bob.result("CallsService.AnswerCall", answer)
        assert (await call_event(alice))[0] in ("callRinging", "callAnswered")
        during = await scrape(core_port)
        assert value(during, "wac_core_calls", state="ACTIVE") == 1
        assert value(during, "wac_core_calls", state="RINGING") == 0
        await alice.result("CallsService.HangupCall", {"callId": call["callId"]})
        while (await call_event(bob))[0] != "callEnded":
            pass
        after, edge_after = await scrape(core_port), await scrape(edge_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("wac_core_calls_placed_total") == 1
    assert delta("wac_core_call_setups_total") == 1
    assert delta("wac_core_call_setup_duration_seconds_count") == 1
    assert delta("wac_core_call_endings_total", reason="COMPLETED") == 1
    assert value(after, "wac_core_calls", state="ACTIVE") == 0
    # callInvited, callRinging, callAnswered, callEnded at least, and presence.
    assert delta("wac_core_events_published_total") >= 4
    # Kept for resumption: at least the call's events to both sessions.
    assert value(after, "wac_core_event_log_events") >= 4
    delivered = value(edge_after, "wac_edge_events_delivered_total") - value(
        edge_before, "wac_edge_events_delivered_total"
    )
    assert delivered >= 4
    subscribe = {"method": "EventsService.Subscribe", "code": "OK"}
    requests = "wac_edge_wapi_requests_total"
    assert value(edge_after, requests, **subscribe) - value(edge_before, requests, **subscribe) == 2
    lag = "wac_edge_event_delivery_lag_seconds_count"
    assert value(edge_after, lag) - value(edge_before, lag) >= 1
    # The call's rows were written (and the subscribers read).
    assert delta("wac_core_db_statement_duration_seconds_count") >= 3


async def test_token_verifications_and_revocations(core: Core, channel: grpc.aio.Channel, core_port: int) -> None:
    await add_subscriber(core, "alice")
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    session = await stub.Login(identity_pb2.LoginRequest(username="alice", password="correct horse", device_name="t"))
    key = await api_key(core, "operator", "identity.verify")
    md = (("authorization", f"Bearer {key}"),)
    before = await scrape(core_port)
    await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=session.access_token), metadata=md)
    await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token="not-a-token"), metadata=md)
    await core.identity.revoke_sessions("alice")
    after = await scrape(core_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("wac_core_token_verifications_total", result="active") == 1
    assert delta("wac_core_token_verifications_total", result="malformed") == 1
    assert delta("wac_core_token_verification_duration_seconds_count") == 2
    assert delta("wac_core_session_revocations_total", reason="revoked") == 1


async def test_http_fallback_polls(core: Core, edge: Edge, edge_port: int) -> None:
    """A held long poll is an HTTP-fallback session subscribed to its events."""
    await add_subscriber(core, "alice")
    before = await scrape(edge_port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds(2)) as http:
        params = {"username": "alice", "password": PASSWORD}
        login = {"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": params}
        session = (await http.post("/wapi/http", json=login)).json()["result"]
        headers = {"Authorization": f"Bearer {session['accessToken']}"}
        drained = await http.get("/wapi/http/events", headers=headers)
        after = max((int(e["seq"]) for e in drained.json()["events"]), default=0)
        poll = asyncio.create_task(http.get(f"/wapi/http/events?afterSeq={after}", headers=headers))
        await eventually(lambda: edge.http.polls == 1)
        held = await scrape(edge_port)
        await publish(core, 1, 1)
        assert (await asyncio.wait_for(poll, seconds())).status_code == 200
        await eventually(lambda: edge.http.polls == 0)
        answered = await scrape(edge_port)
    assert value(held, "wac_edge_http_polls") == 1
    assert value(held, "wac_edge_event_subscriptions") == 1
    assert value(answered, "wac_edge_http_polls") == 0
    ok = value(answered, "wac_edge_wapi_requests_total", method="IdentityService.Login", code="OK")
    assert ok - value(before, "wac_edge_wapi_requests_total", method="IdentityService.Login", code="OK") == 1


async def test_the_directory_is_counted_at_start(tmp_path: Path, core_port: int) -> None:
    async with running_core(tmp_path / "data") as first:
        await add_subscriber(first, "alice")
        await add_subscriber(first, "bob")
    async with running_core(tmp_path / "data"):

        async def counted() -> float:
            return value(await scrape(core_port), "wac_core_directory_entries")

        deadline = asyncio.get_running_loop().time() + seconds()
        while await counted() != 2:
            assert asyncio.get_running_loop().time() < deadline, "the directory was not counted"
            await asyncio.sleep(0.05)


async def test_a_socket_the_edge_closes_counts_under_the_edge_s_code(
    core: Core, tmp_path: Path, edge_port: int
) -> None:
    edge = await start_edge(edge_config(tmp_path / "data", core.port, auth_deadline=0.2))
    try:
        before = await scrape(edge_port)
        async with wapi(edge) as client:
            assert close_code(await client.closed()) == 4401  # never logged in
        await eventually(lambda: edge.connections == 0)
        after = await scrape(edge_port)
    finally:
        await edge.stop()
    closes = "wac_edge_websocket_closes_total"
    assert value(after, closes, code="4401") - value(before, closes, code="4401") == 1


async def test_throttled_and_locked_login_keys(tmp_path: Path, core_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted with each purge of the throttle's rows: often, for the test.
    monkeypatch.setattr(logins, "THROTTLE_PURGE_INTERVAL", 0.05)
    env = {"WAC_IDENTITY_THROTTLE_DELAY": "0.01", "WAC_IDENTITY_LOCK_AFTER": "4"}
    async with running_core(tmp_path / "data", env) as core:
        await add_subscriber(core, "alice")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            for _ in range(6):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Login(identity_pb2.LoginRequest(username="alice", password="wrong", device_name="t"))
                await asyncio.sleep(0.1)

        async def keys() -> tuple[float, float]:
            samples = await scrape(core_port)
            return (
                value(samples, "wac_core_login_throttle_keys", state="throttled"),
                value(samples, "wac_core_login_throttle_keys", state="locked"),
            )

        deadline = asyncio.get_running_loop().time() + seconds()
        while (counted := await keys())[1] < 1:
            assert asyncio.get_running_loop().time() < deadline, counted
            await asyncio.sleep(0.05)
    throttled, locked = counted
    # The address and the username-and-address pair lock; the username alone only slows down.
    assert locked >= 1 and throttled >= 1
