"""GET /sapi/v1/phoneNumbers/{phoneNumber} through the real Envoy: the
gateway asks who holds a number a call from the trunk is for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from settings.gatewaykey import read_gateway_key
from tests.sapi.conftest import Sapi
from tests.sapi.support import assert_error, bad_request_fields, sapi_client
from tests.support.core import add_subscriber
from tests.support.stack import Stack

ALICE = "+34600111222"


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the key the core provisioned for the gateway (gateway.key)."""
    async with sapi_client(stack, read_gateway_key(stack.core.config, wait=0)) as client:
        await add_subscriber(stack.core, "alice", phone_numbers=["600 111 222"])
        yield client


# The forms a number reaches the gateway in: E.164 ("+" is literal in a path
# segment, or escaped), national in the default region, a tel: URI.
@pytest.mark.parametrize(
    "path", ["+34600111222", "%2B34600111222", "600111222", "tel:+34600111222", "tel%3A%2B34600111222"]
)
async def test_the_holder_is_found(gateway: httpx.AsyncClient, path: str) -> None:
    response = await gateway.get(f"/sapi/v1/phoneNumbers/{path}")
    assert response.status_code == 200, response.text
    assert response.json() == {"phoneNumber": ALICE, "subscriber": "alice"}


async def test_a_number_nobody_holds_is_404(gateway: httpx.AsyncClient) -> None:
    body = assert_error(await gateway.get("/sapi/v1/phoneNumbers/+34600999888"), 404, 5)
    assert body["message"] == "no subscriber holds the phone number +34600999888"


async def test_what_is_not_a_number_is_400(gateway: httpx.AsyncClient) -> None:
    for path in ("alice", "12", "sip:alice@example.org"):
        body = assert_error(await gateway.get(f"/sapi/v1/phoneNumbers/{path}"), 400, 3)
        assert bad_request_fields(body) == ["phone_number"], body


async def test_the_path_wins_over_a_query_parameter(gateway: httpx.AsyncClient) -> None:
    for name in ("phoneNumber", "phone_number"):
        response = await gateway.get("/sapi/v1/phoneNumbers/+34600999888", params={name: ALICE})
        assert_error(response, 404, 5)


async def test_without_the_scope_it_is_403_and_without_a_key_401(
    stack: Stack, sapi: Sapi, anonymous: httpx.AsyncClient
) -> None:
    await add_subscriber(stack.core, "alice", phone_numbers=[ALICE])
    verifier = await sapi("identity.verify", "subscribers.read")
    body = assert_error(await verifier.get(f"/sapi/v1/phoneNumbers/{ALICE}"), 403, 7)
    assert "numbers.lookup" in body["message"]
    assert_error(await anonymous.get(f"/sapi/v1/phoneNumbers/{ALICE}"), 401, 16)
    admin = await sapi("admin")
    assert (await admin.get(f"/sapi/v1/phoneNumbers/{ALICE}")).json()["subscriber"] == "alice"
