"""Every method that takes a page token, on a real core: a forged token
(deeply nested JSON, oversized, not base64, the wrong shape) is
INVALID_ARGUMENT naming page_token, never INTERNAL."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from core.server import Core
from tests.presence.devices import Device, md
from tests.support.core import add_subscriber, api_key
from tests.support.status import field_violations
from wac.v1 import calls_pb2, calls_pb2_grpc, contacts_pb2, directory_pb2, identity_pb2, identity_pb2_grpc


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


FORGED = {
    "nested-100000": _b64("[" * 100_000),
    "nested-1500": _b64("[" * 1_500),
    "nested-objects": _b64('{"a":' * 900),
    "not-base64": "garbage!",
    "too-long": _b64(f'["{"x" * 10_000}"]'),
    "wrong-shape": _b64('{"a": [1, 2, 3]}'),
    "bool-for-int": _b64('["fp", true, "x", true]'),
}

Lister = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def listers(core: Core, channel: grpc.aio.Channel) -> dict[str, Lister]:
    await add_subscriber(core, "alice")
    alice = await Device.login(core, channel, "alice", connect=False)
    admin = md(await api_key(core, "provisioning", "subscribers.read"))
    identity = identity_pb2_grpc.IdentityServiceStub(channel)
    calls = calls_pb2_grpc.CallsServiceStub(channel)
    return {
        "ListSubscribers": lambda token: identity.ListSubscribers(
            identity_pb2.ListSubscribersRequest(page_token=token), metadata=admin
        ),
        "ListCalls": lambda token: calls.ListCalls(
            calls_pb2.ListCallsRequest(page_token=token), metadata=alice.metadata
        ),
        "ListContacts": lambda token: alice.contacts.ListContacts(
            contacts_pb2.ListContactsRequest(page_token=token), metadata=alice.metadata
        ),
        "SearchDirectory": lambda token: alice.directory.SearchDirectory(
            directory_pb2.SearchDirectoryRequest(query="ali", page_token=token), metadata=alice.metadata
        ),
    }


async def test_every_list_method_refuses_a_forged_page_token(listers: dict[str, Lister]) -> None:
    for method, call in listers.items():
        await call("")  # the first page is fine
        for name, token in FORGED.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(token)
            where = f"{method} with {name}"
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, where
            assert err.value.details() == "page_token: is not a page token this method returned", where
            assert field_violations(err.value) == ["page_token"], where
