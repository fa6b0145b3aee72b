"""A real Envoy: SAPI transcoding, its error shape, native gRPC and the WAPI routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.asyncio.client import connect

from tests.envoy.stubs import StubIdentity
from tests.support.timing import TIMEOUT
from wac.v1 import identity_pb2, identity_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """Every error, the core's or Envoy's own, has one shape: a google.rpc.Status in JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    return body


@pytest.fixture
async def http(front_door: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=front_door, timeout=TIMEOUT) as client:
        yield client


@pytest.mark.usefixtures("stub_core")
async def test_get_is_transcoded_to_the_core(http: httpx.AsyncClient) -> None:
    response = await http.get("/sapi/v1/jwks")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["keys"][0]["kid"] == "k1"


async def test_client_address_and_credentials_reach_the_core(http: httpx.AsyncClient, stub_core: StubIdentity) -> None:
    headers = {"authorization": "Bearer k-123", "x-forwarded-for": "203.0.113.9"}
    assert (await http.get("/sapi/v1/jwks", headers=headers)).status_code == 200
    [metadata] = stub_core.seen
    assert metadata["authorization"] == "Bearer k-123"
    # Envoy puts the peer it sees, not what the client claims.
    assert metadata["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.usefixtures("stub_core")
async def test_json_names_are_lower_camel_case(http: httpx.AsyncClient) -> None:
    response = await http.get("/sapi/v1/subscribers/alice")
    assert response.status_code == 200
    assert response.json()["displayName"] == "Alice"


@pytest.mark.usefixtures("stub_core")
async def test_core_error_keeps_its_status_and_details(http: httpx.AsyncClient) -> None:
    body = assert_error(await http.get("/sapi/v1/subscribers/bob"), 404, 5)
    assert body["message"] == "no subscriber 'bob'"
    [detail] = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"
    assert detail["resourceName"] == "bob"


@pytest.mark.usefixtures("stub_core")
async def test_bad_request_details_are_printed(http: httpx.AsyncClient) -> None:
    response = await http.post("/sapi/v1/subscribers", json={"displayName": "Nobody"})
    body = assert_error(response, 400, 3)
    [detail] = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "subscriber.username"


@pytest.mark.usefixtures("stub_core")
async def test_body_field_is_sent_to_the_core(http: httpx.AsyncClient) -> None:
    response = await http.post("/sapi/v1/subscribers", json={"username": "carol"})
    assert response.status_code == 200
    assert response.json()["username"] == "carol"


@pytest.mark.usefixtures("stub_core")
async def test_custom_verb_reaches_the_core(http: httpx.AsyncClient) -> None:
    # The stand-in does not implement RevokeSessions: its UNIMPLEMENTED proves
    # that the call got there.
    assert_error(await http.post("/sapi/v1/subscribers/bob:revokeSessions"), 501, 12)


@pytest.mark.usefixtures("stub_core")
async def test_unknown_path_is_404_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/sapi/v1/no-such-thing"), 404, 5)
    assert_error(await http.delete("/sapi/v1/jwks"), 404, 5)


@pytest.mark.usefixtures("stub_core")
async def test_unknown_query_parameter_is_400_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/sapi/v1/jwks", params={"colour": "red"}), 400, 3)


@pytest.mark.usefixtures("stub_core")
async def test_malformed_json_is_400_json(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/sapi/v1/subscribers",
        content=b'{"username": ',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, 3)


@pytest.mark.usefixtures("stub_core")
async def test_body_over_one_mebibyte_is_413_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/sapi/v1/subscribers", json={"username": "x" * (1 << 20)})
    assert_error(response, 413, 8)


async def test_core_down_is_503_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/sapi/v1/jwks"), 503, 14)


async def test_openapi_document_is_served_by_envoy(http: httpx.AsyncClient) -> None:
    response = await http.get("/sapi/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads((ROOT / "envoy" / "openapi.json").read_text())


@pytest.mark.usefixtures("stub_core")
async def test_native_grpc_passes_through(front_door: str) -> None:
    target = front_door.removeprefix("http://")
    async with grpc.aio.insecure_channel(target) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        jwks = await identity.GetJwks(identity_pb2.GetJwksRequest(), timeout=TIMEOUT)
        assert jwks.keys[0].kid == "k1"

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await identity.GetSubscriber(identity_pb2.GetSubscriberRequest(username="bob"), timeout=TIMEOUT)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        trailers = dict(failure.value.trailing_metadata() or ())
        assert "grpc-status-details-bin" in trailers

        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_native_grpc_sees_envoys_errors_as_plain_status(front_door: str) -> None:
    # The JSON error body is for REST clients; a gRPC client reads grpc-message.
    async with grpc.aio.insecure_channel(front_door.removeprefix("http://")) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await identity.GetJwks(identity_pb2.GetJwksRequest(), timeout=TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not (failure.value.details() or "").startswith("{")


@pytest.mark.usefixtures("stub_edge")
@pytest.mark.parametrize("path", ["/wapi", "/wapi/http/events", "/sdk/wac.js", "/", "/demo/"])
async def test_browser_paths_go_to_the_edge(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert response.text == f"edge {path}\n"


@pytest.mark.usefixtures("stub_edge")
@pytest.mark.parametrize("path", ["/wapi", "/wapi/ws"])
async def test_websocket_upgrade_reaches_the_edge(front_door: str, path: str) -> None:
    url = front_door.replace("http://", "ws://") + path
    async with connect(url, open_timeout=TIMEOUT) as socket:
        await socket.send("hello")
        assert await socket.recv() == "echo hello"


async def test_edge_down_is_503_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/wapi/http/events"), 503, 14)
