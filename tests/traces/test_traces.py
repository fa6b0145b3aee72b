"""Traces across the front door: with [tracing] otlp_endpoint set, one
request is one trace, its spans in Envoy, the edge and the core, exported
over OTLP to a collector (tests/support/otlp.py keeps them in memory).

Each test runs the whole stack (a real Envoy in front of a real core and
edge), as an operator would look at a trace in Jaeger or Tempo.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support import otlp
from tests.support.core import add_subscriber, api_key
from tests.support.stack import Stack, running_stack
from tests.support.timing import seconds

PASSWORD = "correct horse"
LOGIN = {"username": "alice", "password": PASSWORD, "deviceName": "traces"}
ENVOY, EDGE, CORE = "wac-envoy", "wac-edge", "wac-core"


@pytest.fixture
async def collector() -> AsyncIterator[otlp.Collector]:
    async with otlp.collector() as received:
        yield received


@pytest.fixture
async def stack(tmp_path: Path, collector: otlp.Collector) -> AsyncIterator[Stack]:
    env = {"WAC_TRACING_OTLP_ENDPOINT": collector.endpoint}
    async with running_stack(tmp_path / "data", env) as running:
        await add_subscriber(running.core, "alice", PASSWORD)
        yield running


def traceparent() -> tuple[str, str, str]:
    """A client's own trace: (traceparent, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def one(spans: list[otlp.Span], service: str) -> otlp.Span:
    mine = [span for span in spans if span.service == service]
    assert len(mine) == 1, f"expected one span of {service}, got {[(s.service, s.name) for s in spans]}"
    return mine[0]


async def test_a_wapi_request_over_http_is_one_trace_through_envoy_the_edge_and_the_core(
    stack: Stack, collector: otlp.Collector
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=seconds()) as http:
        answer = await http.post(
            "/wapi/http", json={"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": LOGIN}
        )
    assert answer.status_code == 200 and "result" in answer.json(), answer.text

    core = await collector.span(CORE, "wac.v1.IdentityService/Login")
    spans = await collector.trace(core.trace_id, {ENVOY, EDGE, CORE})
    envoy, edge = one(spans, ENVOY), one(spans, EDGE)
    # Envoy's span is the root; the edge's is its child, the core's the edge's.
    assert envoy.parent_id == ""
    assert edge.parent_id == envoy.span_id
    assert core.parent_id == edge.span_id
    assert edge.name == "WAPI IdentityService.Login"
    assert core.attributes["rpc.grpc.status_code"] == 0
    assert core.attributes["rpc.service"] == "wac.v1.IdentityService"
    assert not core.failed and not edge.failed


async def test_a_wapi_request_over_websocket_joins_the_trace_the_client_sent(
    stack: Stack, collector: otlp.Collector
) -> None:
    parent, trace_id, client_span = traceparent()
    wrong = secrets.token_urlsafe(12)
    async with websockets.connect(stack.ws_url, subprotocols=["wapi.v1"]) as socket:
        await socket.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "IdentityService.Login",
                    "params": {**LOGIN, "password": wrong},
                    "traceparent": parent,
                }
            )
        )
        answer = json.loads(await socket.recv())
    assert answer["error"]["data"]["status"] == "UNAUTHENTICATED", answer

    edge = await collector.span(EDGE, "WAPI IdentityService.Login", trace_id)
    core = await collector.span(CORE, "wac.v1.IdentityService/Login", trace_id)
    assert edge.parent_id == client_span
    assert core.parent_id == edge.span_id
    # A failure is marked on both hops, with the status the client got.
    assert edge.failed and core.failed
    assert core.attributes["rpc.grpc.status_code"] == 16
    assert "UNAUTHENTICATED" in core.status_message
    # Not a secret in sight: the password is nowhere in what was exported.
    assert wrong not in repr(collector.of(trace_id))


async def test_a_sapi_verify_is_one_trace_through_envoy_and_the_core(stack: Stack, collector: otlp.Collector) -> None:
    key = await api_key(stack.core, "gateway", "identity.verify")
    parent, trace_id, client_span = traceparent()
    async with httpx.AsyncClient(base_url=stack.url, timeout=seconds()) as http:
        login = await http.post(
            "/wapi/http", json={"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": LOGIN}
        )
        token = login.json()["result"]["accessToken"]
        verified = await http.post(
            "/sapi/v1/identity:verify",
            json={"token": token},
            headers={"authorization": f"Bearer {key}", "traceparent": parent},
        )
    assert verified.status_code == 200 and verified.json()["subscriber"]["username"] == "alice", verified.text

    spans = await collector.trace(trace_id, {ENVOY, CORE})
    envoy, core = one(spans, ENVOY), one(spans, CORE)
    # The gateway's trace goes on through Envoy (transcoding) to the core.
    assert envoy.parent_id == client_span
    assert core.parent_id == envoy.span_id
    assert core.name == "wac.v1.IdentityService/VerifyToken"
    exported = repr(collector.spans)
    assert token not in exported and key not in exported


async def test_log_lines_of_a_request_carry_its_trace_id_in_the_edge_and_the_core(
    stack: Stack, collector: otlp.Collector, caplog: pytest.LogCaptureFixture
) -> None:
    parent, trace_id, _ = traceparent()
    caplog.set_level(logging.DEBUG, logger="wac")
    async with websockets.connect(stack.ws_url, subprotocols=["wapi.v1"]) as socket:
        await socket.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": LOGIN, "traceparent": parent}
            )
        )
        assert "result" in json.loads(await socket.recv())
        await socket.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "IdentityService.GetSubscriber",
                    "params": {"username": "bob"},
                    "traceparent": parent,
                }
            )
        )
        assert json.loads(await socket.recv())["error"]["data"]["status"] in {"NOT_FOUND", "PERMISSION_DENIED"}
    lines = [r for r in caplog.records if getattr(r, "trace_id", "") == trace_id]
    by_logger = {(r.name, r.getMessage(), getattr(r, "method", "")): r for r in lines}
    login_core = by_logger[("wac.rpc", "rpc", "/wac.v1.IdentityService/Login")]
    login_edge = by_logger[("wac.wapi", "wapi", "IdentityService.Login")]
    assert login_core.levelno == login_edge.levelno == logging.DEBUG
    assert login_edge.subscriber == "alice"  # type: ignore[attr-defined]
    assert login_core.ms >= 0 and login_edge.ms >= 0  # type: ignore[attr-defined]
    failed_core = by_logger[("wac.rpc", "rpc failed", "/wac.v1.IdentityService/GetSubscriber")]
    failed_edge = by_logger[("wac.wapi", "wapi failed", "IdentityService.GetSubscriber")]
    # A failure is a warning, naming the subscriber who made the call.
    assert failed_core.levelno == failed_edge.levelno == logging.WARNING
    assert failed_core.subscriber == failed_edge.subscriber == "alice"  # type: ignore[attr-defined]
    for record in lines:
        assert PASSWORD not in json.dumps(record.__dict__, default=str)
