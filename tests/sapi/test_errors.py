"""Every SAPI error has one JSON shape, {"code", "message", "details"}, and
the documented HTTP status, whether the core or Envoy itself answered.

429 is not here: no SAPI method can be throttled. The only throttled method
is Login (wrong passwords), which is not annotated for SAPI, and page sizes
above the maximum are clamped rather than refused, so no SAPI request can
honestly yield RESOURCE_EXHAUSTED from this core.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from tests.sapi.conftest import Sapi
from tests.sapi.support import assert_error, bad_request_fields, sapi_client, sapi_stack
from tests.support.core import add_subscriber, api_key, login
from tests.support.stack import Stack


async def test_malformed_json_is_400(sapi: Sapi) -> None:
    operator = await sapi("subscribers.write", "identity.verify")
    for path in ("/sapi/v1/subscribers", "/sapi/v1/identity:verify"):
        response = await operator.post(path, content=b'{"username": ', headers={"content-type": "application/json"})
        assert_error(response, 400, 3)
    # A value of the wrong JSON type is malformed too.
    assert_error(await operator.post("/sapi/v1/identity:verify", json={"token": {"not": "a string"}}), 400, 3)


async def test_invalid_field_is_400_naming_the_field(sapi: Sapi) -> None:
    operator = await sapi("subscribers.write")
    cases = {
        "subscriber.email": {"username": "carol", "password": "carol-secret", "email": "not an address"},
        "subscriber.username": {"username": "Carol King!", "password": "carol-secret"},
        "subscriber.password": {"username": "carol", "password": "short"},
        "subscriber.phone_numbers[0]": {"username": "carol", "password": "carol-secret", "phoneNumbers": ["12"]},
    }
    for field, subscriber in cases.items():
        body = assert_error(await operator.post("/sapi/v1/subscribers", json=subscriber), 400, 3)
        assert field in body["message"], body
        assert bad_request_fields(body) == [field], body
    # A query parameter of the wrong type, refused by the transcoder.
    reader = await sapi("subscribers.read")
    body = assert_error(await reader.get("/sapi/v1/subscribers", params={"pageSize": "many"}), 400, 3)
    assert "page_size" in body["message"]


async def test_missing_and_unknown_keys_are_401(anonymous: httpx.AsyncClient) -> None:
    missing = assert_error(await anonymous.get("/sapi/v1/subscribers"), 401, 16)
    assert "Bearer" in missing["message"]
    unknown = assert_error(
        await anonymous.get("/sapi/v1/jwks", headers={"authorization": "Bearer wac_0123456789_notasecret"}), 401, 16
    )
    assert "unknown" in unknown["message"]
    for credential in ("Bearer nonsense", "Basic YWxpY2U6c2VjcmV0", "Bearer a.b.c"):
        assert_error(await anonymous.get("/sapi/v1/jwks", headers={"authorization": credential}), 401, 16)


async def test_missing_scope_is_403_naming_the_scope(sapi: Sapi) -> None:
    gateway = await sapi("identity.verify")
    denied = assert_error(await gateway.get("/sapi/v1/subscribers"), 403, 7)
    assert "subscribers.read" in denied["message"]
    denied = assert_error(await gateway.post("/sapi/v1/subscribers", json={"username": "x"}), 403, 7)
    assert "subscribers.write" in denied["message"]
    # "admin" grants every scope.
    admin = await sapi("admin")
    assert (await admin.get("/sapi/v1/subscribers")).status_code == 200


async def test_subscriber_token_on_a_service_method_is_403(stack: Stack, core_channel: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice")
    token = (await login(core_channel, "alice")).access_token
    async with sapi_client(stack, token) as browser:
        body = assert_error(await browser.get("/sapi/v1/subscribers"), 403, 7)
        assert "not open to subscribers" in body["message"]
        # Reading oneself is open to subscribers.
        assert (await browser.get("/sapi/v1/subscribers/alice")).status_code == 200


async def test_unknown_subscriber_is_404(sapi: Sapi) -> None:
    operator = await sapi("subscribers.read", "subscribers.write")
    for response in (
        await operator.get("/sapi/v1/subscribers/nobody"),
        await operator.patch("/sapi/v1/subscribers/nobody", params={"updateMask": "displayName"}, json={}),
        await operator.delete("/sapi/v1/subscribers/nobody"),
    ):
        body = assert_error(response, 404, 5)
        assert "nobody" in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sapi/v1/nothing"),
        ("GET", "/sapi/v2/jwks"),
        ("DELETE", "/sapi/v1/jwks"),
        ("PUT", "/sapi/v1/subscribers/alice"),
        ("GET", "/sapi/v1/subscribers/alice/contacts"),
        ("POST", "/sapi/v1/subscribers/alice:explode"),
    ],
)
async def test_unknown_path_is_404(sapi: Sapi, method: str, path: str) -> None:
    admin = await sapi("admin")
    assert_error(await admin.request(method, path), 404, 5)


async def test_unknown_query_parameter_is_400(sapi: Sapi) -> None:
    reader = await sapi("subscribers.read")
    assert_error(await reader.get("/sapi/v1/subscribers", params={"colour": "red"}), 400, 3)
    assert_error(await reader.get("/sapi/v1/subscribers/alice", params={"pageSize": "2"}), 400, 3)


async def test_duplicate_username_is_409(stack: Stack, sapi: Sapi) -> None:
    await add_subscriber(stack.core, "alice")
    operator = await sapi("subscribers.write")
    body = assert_error(
        await operator.post("/sapi/v1/subscribers", json={"username": "alice", "password": "another-secret"}),
        409,
        6,
    )
    assert "alice" in body["message"]


async def test_body_over_one_mebibyte_is_413(sapi: Sapi) -> None:
    operator = await sapi("subscribers.write", "identity.verify")
    huge = {"username": "carol", "password": "carol-secret", "displayName": "x" * (1 << 20)}
    assert_error(await operator.post("/sapi/v1/subscribers", json=huge), 413, 8)
    assert_error(await operator.post("/sapi/v1/identity:verify", json={"token": "y" * (1 << 20)}), 413, 8)
    # Just under the limit reaches the core, which has its own, smaller, bounds.
    near = {"username": "carol", "password": "carol-secret", "displayName": "x" * 1_000_000}
    body = assert_error(await operator.post("/sapi/v1/subscribers", json=near), 400, 3)
    assert bad_request_fields(body) == ["subscriber.display_name"]


async def test_core_down_is_503(tmp_path: Path) -> None:
    async with sapi_stack(tmp_path) as stack:
        key = await api_key(stack.core, "gateway", "admin")
        async with sapi_client(stack, key) as gateway:
            assert (await gateway.get("/sapi/v1/jwks")).status_code == 200
            await stack.core.server.stop(0)
            for response in (
                await gateway.get("/sapi/v1/jwks"),
                await gateway.post("/sapi/v1/identity:verify", json={"token": "a.b.c"}),
                await gateway.get("/sapi/v1/subscribers"),
            ):
                assert_error(response, 503, 14)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x#trace", "1"),
        ("x-trace-bin", "!!not base64!!"),
        ("grpc-timeout", "banana"),
        ("grpc-previous-rpc-attempts", "many"),
    ],
)
async def test_headers_grpc_would_refuse_are_not_a_500(sapi: Sapi, name: str, value: str) -> None:
    """Valid HTTP headers that are invalid gRPC metadata: the core's gRPC
    library would fail the call with INTERNAL, so Envoy drops them."""
    gateway = await sapi("identity.verify")
    response = await gateway.post("/sapi/v1/identity:verify", json={"token": "a.b.c"}, headers={name: value})
    assert response.status_code == 200, response.text
    assert response.json()["reason"] == "MALFORMED"


async def test_a_body_naming_another_subscriber_than_the_path_is_400(stack: Stack, sapi: Sapi) -> None:
    """The path says whom a request is about; a body may repeat it, not contradict it."""
    await add_subscriber(stack.core, "alice", display_name="Alice")
    await add_subscriber(stack.core, "bob", display_name="Bob")
    operator = await sapi("subscribers.read", "subscribers.write")
    mask = {"updateMask": "displayName"}

    contradicted = await operator.patch(
        "/sapi/v1/subscribers/alice", params=mask, json={"username": "bob", "displayName": "Mallory"}
    )
    body = assert_error(contradicted, 400, 3)
    assert "alice" in body["message"] and "bob" in body["message"]
    assert_error(await operator.post("/sapi/v1/subscribers/alice:revokeSessions", json={"username": "bob"}), 400, 3)
    for name, display_name in (("alice", "Alice"), ("bob", "Bob")):
        assert (await operator.get(f"/sapi/v1/subscribers/{name}")).json()["displayName"] == display_name

    repeated = await operator.patch(
        "/sapi/v1/subscribers/alice", params=mask, json={"username": "alice", "displayName": "Alice L."}
    )
    assert (repeated.status_code, repeated.json()["displayName"]) == (200, "Alice L."), repeated.text


async def test_a_query_parameter_cannot_redirect_the_path(stack: Stack, sapi: Sapi) -> None:
    """The transcoder would let ?username=bob override /subscribers/alice;
    a parameter naming a field the path sets is not bound, so the path wins."""
    await add_subscriber(stack.core, "alice", display_name="Alice")
    await add_subscriber(stack.core, "bob", display_name="Bob")
    operator = await sapi("subscribers.read", "subscribers.write", "presence.read", "calls.read")

    read = await operator.get("/sapi/v1/subscribers/alice", params={"username": "bob"})
    assert (read.status_code, read.json()["username"]) == (200, "alice"), read.text
    presence = await operator.get("/sapi/v1/subscribers/alice/presence", params={"username": "bob"})
    assert (presence.status_code, presence.json()["username"]) == (200, "alice"), presence.text
    patched = await operator.patch(
        "/sapi/v1/subscribers/alice",
        params={"updateMask": "displayName", "subscriber.username": "bob"},
        json={"displayName": "Alice L."},
    )
    assert (patched.status_code, patched.json()["username"]) == (200, "alice"), patched.text
    assert (await operator.get("/sapi/v1/subscribers/bob")).json()["displayName"] == "Bob"
    for name in ("callId", "call_id"):
        body = assert_error(await operator.get("/sapi/v1/calls/no-such-call", params={name: "other"}), 404, 5)
        assert "no-such-call" in body["message"]
