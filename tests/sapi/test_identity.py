"""SAPI's identity paths through the real Envoy against the real core:
token introspection, authorisation, the JWKS, and subscriber provisioning."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet
from websockets.asyncio.client import connect

from tests.sapi.conftest import Sapi
from tests.sapi.support import PASSWORD, SPAIN, USER, assert_error, rfc3339, sapi_client, sapi_stack
from tests.support.clock import FakeClock
from tests.support.core import add_subscriber, api_key, login
from tests.support.stack import Stack
from tests.support.timing import seconds
from tests.wapi.support import WapiClient
from wac.v1 import identity_pb2, identity_pb2_grpc

VERIFY = "/sapi/v1/identity:verify"
AUTHORIZE = "/sapi/v1/identity:authorize"
INACTIVE_KEYS = {"active", "reason", "permissions", "sessionId"}


def jws_part(token: str, index: int) -> dict[str, object]:
    """The header (0) or payload (1) of a JWS compact token, unverified: only to forge one."""
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def test_verify_an_active_token(stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice", display_name="Alice", roles=["spain"])
    session = await login(core_channel, "alice")
    gateway = await sapi("identity.verify")

    response = await gateway.post(VERIFY, json={"token": session.access_token})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"active", "reason", "subscriber", "permissions", "sessionId", "expireTime"}
    assert body["active"] is True
    # An enum's zero value is its "unset": there is no reason to be inactive.
    assert body["reason"] == "REASON_UNSPECIFIED"
    assert body["sessionId"] == session.session_id
    assert body["permissions"] == SPAIN
    subscriber = body["subscriber"]
    assert subscriber["username"] == "alice"
    assert subscriber["displayName"] == "Alice"
    assert subscriber["roles"] == ["spain"]
    assert subscriber["permissions"] == SPAIN
    assert "password" not in subscriber
    expires = rfc3339(body["expireTime"])
    assert expires == datetime.datetime.fromtimestamp(session.expire_time.seconds, datetime.UTC)
    # 15 minutes by default.
    assert abs((expires - datetime.datetime.now(datetime.UTC)).total_seconds() - 900) < 5


async def test_verify_inactive_tokens_is_a_200_with_the_reason(
    stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel
) -> None:
    for name in ("alice", "bob", "carol"):
        await add_subscriber(stack.core, name)
    gateway = await sapi("identity.verify")
    admin = await sapi("subscribers.write")

    valid = (await login(core_channel, "alice", device="forged")).access_token
    forger = ECKey.generate_key("P-256")
    # Same header (kid), same claims, signed by a key that is not wac's.
    forged = jwt.encode(jws_part(valid, 0), jws_part(valid, 1), forger, algorithms=["ES256"])

    revoked = (await login(core_channel, "alice", device="revoked")).access_token
    assert (await admin.post("/sapi/v1/subscribers/alice:revokeSessions")).json() == {"revokedCount": 2}

    disabled = (await login(core_channel, "bob")).access_token
    patch = await admin.patch("/sapi/v1/subscribers/bob", params={"updateMask": "disabled"}, json={"disabled": True})
    assert patch.status_code == 200 and patch.json()["disabled"] is True, patch.text

    deleted = (await login(core_channel, "carol")).access_token
    assert (await admin.delete("/sapi/v1/subscribers/carol")).status_code == 200

    cases = {
        "not-a-jwt": "MALFORMED",
        "a.b.c": "MALFORMED",
        forged: "INVALID_SIGNATURE",
        revoked: "REVOKED",
        disabled: "DISABLED",
        deleted: "DISABLED",
    }
    for token, reason in cases.items():
        response = await gateway.post(VERIFY, json={"token": token})
        assert response.status_code == 200, response.text
        body = response.json()
        # RFC 7662: nothing about an inactive token but the fact (and why).
        assert set(body) == INACTIVE_KEYS, body
        assert (body["active"], body["reason"]) == (False, reason), token
        assert (body["permissions"], body["sessionId"]) == ([], "")


async def test_verify_an_expired_token(tmp_path: Path) -> None:
    clock = FakeClock()
    async with sapi_stack(tmp_path, {"WAC_IDENTITY_ACCESS_TOKEN_TTL": "60"}, clock=clock) as stack:
        await add_subscriber(stack.core, "alice")
        key = await api_key(stack.core, "gateway", "identity.verify")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.core.port}") as channel:
            session = await login(channel, "alice")
        assert session.expire_time.seconds == int(clock.time()) + 60
        async with sapi_client(stack, key) as gateway:
            await clock.advance(60 - 1)
            alive = await gateway.post(VERIFY, json={"token": session.access_token})
            assert alive.json()["active"] is True
            await clock.advance(1)
            response = await gateway.post(VERIFY, json={"token": session.access_token})
    assert response.status_code == 200, response.text
    assert response.json() == {"active": False, "reason": "EXPIRED", "permissions": [], "sessionId": ""}


async def test_authorize_pstn_by_prefix(stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel) -> None:
    # The role "spain" comes from the TOML file given as WAC_CONFIG.
    await add_subscriber(stack.core, "alice", roles=["spain"])
    token = (await login(core_channel, "alice")).access_token
    gateway = await sapi("identity.verify")

    async def authorize(action: str, target: str = "", credential: str = token) -> dict[str, object]:
        response = await gateway.post(AUTHORIZE, json={"token": credential, "action": action, "target": target})
        assert response.status_code == 200, response.text
        return response.json()

    assert await authorize("call.pstn", "+34600111222") == {"allowed": True, "reason": ""}
    assert await authorize("call.pstn", "tel:+34912345678") == {"allowed": True, "reason": ""}
    assert await authorize("call.pstn", "+33612345678") == {
        "allowed": False,
        "reason": "call.pstn is limited to numbers starting with +34",
    }
    assert await authorize("call.audio") == {"allowed": True, "reason": ""}
    assert await authorize("call.video") == {"allowed": False, "reason": "no call.video permission"}
    assert await authorize("call.pstn", "+34600111222", "not-a-jwt") == {
        "allowed": False,
        "reason": "token not active: MALFORMED",
    }
    missing = assert_error(await gateway.post(AUTHORIZE, json={"token": token}), 400, 3)
    assert "action" in missing["message"]


async def test_the_jwks_needs_no_credential_at_either_address(
    stack: Stack, anonymous: httpx.AsyncClient, core_channel: grpc.aio.Channel
) -> None:
    # A JWKS is public by convention: no API key, over REST or native gRPC.
    over_grpc = await identity_pb2_grpc.IdentityServiceStub(core_channel).GetJwks(
        identity_pb2.GetJwksRequest(), timeout=seconds()
    )
    expected = {"keys": [json_format.MessageToDict(key) for key in over_grpc.keys]}
    assert expected["keys"]
    for path in ("/sapi/v1/jwks", "/.well-known/jwks.json"):
        response = await anonymous.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == expected, path
    # Only GET: the conventional address is no way into anything else.
    assert_error(await anonymous.post("/.well-known/jwks.json", json={}), 404, 5)


async def test_jwks_verifies_a_real_access_token(
    stack: Stack, anonymous: httpx.AsyncClient, core_channel: grpc.aio.Channel
) -> None:
    await add_subscriber(stack.core, "alice")
    session = await login(core_channel, "alice")

    response = await anonymous.get("/.well-known/jwks.json")

    assert response.status_code == 200, response.text
    document = response.json()
    assert set(document) == {"keys"} and document["keys"], document
    for jwk in document["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}, jwk
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
    # What a gateway does offline: a standard JOSE library and nothing of wac's.
    keys = KeySet.import_key_set(document)
    token = jwt.decode(session.access_token, keys, algorithms=["ES256"])
    assert token.header["kid"] in {jwk["kid"] for jwk in document["keys"]}
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "wac"},
        sub={"essential": True, "value": "alice"},
        sid={"essential": True, "value": session.session_id},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(token.claims)
    # And the published keys are only the public halves.
    assert all(not key.is_private for key in keys.keys)
    head, payload, signature = session.access_token.split(".")
    tampered = f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}"
    with pytest.raises(BadSignatureError):
        jwt.decode(tampered, keys, algorithms=["ES256"])


async def test_subscriber_create_get_patch_delete(stack: Stack, sapi: Sapi) -> None:
    operator = await sapi("subscribers.read", "subscribers.write")

    created = await operator.post(
        "/sapi/v1/subscribers",
        json={
            "username": "carol",
            "password": "carol-secret",
            "displayName": "Carol King",
            "phoneNumbers": ["600 123 456"],
            "email": "carol@example.com",
        },
    )

    assert created.status_code == 200, created.text
    carol = created.json()
    assert set(carol) == {
        "username", "displayName", "phoneNumbers", "email", "roles", "permissions",
        "disabled", "createTime", "updateTime",
    }  # fmt: skip
    assert carol["username"] == "carol"
    assert carol["displayName"] == "Carol King"
    # Normalised with the default region (ES).
    assert carol["phoneNumbers"] == ["+34600123456"]
    assert carol["email"] == "carol@example.com"
    assert carol["roles"] == ["user"]
    assert carol["permissions"] == USER
    assert carol["disabled"] is False
    assert rfc3339(carol["createTime"]) == rfc3339(carol["updateTime"])

    got = await operator.get("/sapi/v1/subscribers/carol")
    assert got.status_code == 200 and got.json() == carol

    # Only the fields named in updateMask change, whatever else the body says.
    patched = await operator.patch(
        "/sapi/v1/subscribers/carol",
        params={"updateMask": "displayName,roles"},
        json={"displayName": "Carol", "roles": ["spain"], "email": "ignored@example.com"},
    )
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert (after["displayName"], after["roles"], after["permissions"]) == ("Carol", ["spain"], SPAIN)
    assert after["email"] == "carol@example.com"
    assert rfc3339(after["updateTime"]) > rfc3339(carol["updateTime"])
    assert (await operator.get("/sapi/v1/subscribers/carol")).json() == after

    deleted = await operator.delete("/sapi/v1/subscribers/carol")
    assert deleted.status_code == 200 and deleted.json() == {}, deleted.text
    body = assert_error(await operator.get("/sapi/v1/subscribers/carol"), 404, 5)
    assert "carol" in body["message"]
    assert_error(await operator.delete("/sapi/v1/subscribers/carol"), 404, 5)


async def test_subscriber_created_over_sapi_can_log_in(
    stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel
) -> None:
    operator = await sapi("subscribers.write")
    created = await operator.post("/sapi/v1/subscribers", json={"username": "dave", "password": "dave-secret"})
    assert created.status_code == 200, created.text
    session = await login(core_channel, "dave", "dave-secret")
    assert session.subscriber.username == "dave"
    # A new password set over SAPI ends the sessions and replaces the old one.
    patched = await operator.patch(
        "/sapi/v1/subscribers/dave", params={"updateMask": "password"}, json={"password": "new-secret"}
    )
    assert patched.status_code == 200 and "password" not in patched.json(), patched.text
    gateway = await sapi("identity.verify")
    verdict = (await gateway.post(VERIFY, json={"token": session.access_token})).json()
    assert (verdict["active"], verdict["reason"]) == (False, "REVOKED")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await login(core_channel, "dave", "dave-secret")
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await login(core_channel, "dave", "new-secret")).subscriber.username == "dave"


async def test_list_subscribers_in_pages(stack: Stack, sapi: Sapi) -> None:
    names = ["ann", "ben", "cat", "dan", "eve"]
    for name in reversed(names):
        await add_subscriber(stack.core, name)
    reader = await sapi("subscribers.read")

    pages: list[list[str]] = []
    token = ""
    while True:
        params = {"pageSize": "2", **({"pageToken": token} if token else {})}
        response = await reader.get("/sapi/v1/subscribers", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"subscribers", "nextPageToken"}
        pages.append([s["username"] for s in body["subscribers"]])
        token = body["nextPageToken"]
        if not token:
            break

    assert pages == [["ann", "ben"], ["cat", "dan"], ["eve"]]
    everyone = (await reader.get("/sapi/v1/subscribers")).json()
    assert [s["username"] for s in everyone["subscribers"]] == names
    assert everyone["nextPageToken"] == ""
    bad = assert_error(await reader.get("/sapi/v1/subscribers", params={"pageToken": "garbage!"}), 400, 3)
    assert "page_token" in bad["message"]


async def test_revoke_sessions_counts_them(stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice")
    await login(core_channel, "alice", device="laptop")
    await login(core_channel, "alice", device="phone")
    operator = await sapi("subscribers.write")

    first = await operator.post("/sapi/v1/subscribers/alice:revokeSessions")
    again = await operator.post("/sapi/v1/subscribers/alice:revokeSessions", json={})

    assert (first.status_code, first.json()) == (200, {"revokedCount": 2})
    # proto3 JSON leaves nothing out of a response: a zero is printed too.
    assert (again.status_code, again.json()) == (200, {"revokedCount": 0})
    assert_error(await operator.post("/sapi/v1/subscribers/nobody:revokeSessions"), 404, 5)


async def test_gateway_flow_login_verify_revoke(stack: Stack, sapi: Sapi) -> None:
    """A browser logs in over the WAPI, its gateway checks the token over SAPI,
    the operator revokes the sessions, and the same token is refused at once."""
    await add_subscriber(stack.core, "alice", password=PASSWORD)
    gateway = await sapi("identity.verify", "subscribers.write")
    async with connect(stack.ws_url, open_timeout=seconds()) as ws:
        browser = WapiClient(ws)
        session = await browser.login("alice", PASSWORD, device="browser")
        assert await browser.result("EventsService.Subscribe", {}) == {}
        token = session["accessToken"]

        before = (await gateway.post(VERIFY, json={"token": token})).json()
        assert (before["active"], before["sessionId"]) == (True, session["sessionId"])

        revoked = await gateway.post("/sapi/v1/subscribers/alice:revokeSessions")
        assert revoked.json() == {"revokedCount": 1}
        started = time.monotonic()
        while True:
            after = (await gateway.post(VERIFY, json={"token": token})).json()
            if not after["active"] or time.monotonic() - started > 1.0:
                break
            await asyncio.sleep(0.05)
        assert (after["active"], after["reason"]) == (False, "REVOKED")
        assert time.monotonic() - started <= 1.0
        # The browser is told too.
        events = await browser.events_until("sessionRevoked")
        assert events[-1]["sessionRevoked"]["sessionId"] == session["sessionId"]
