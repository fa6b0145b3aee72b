"""Schemathesis against SAPI, through the real Envoy, on the real core.

Every operation of envoy/openapi.json gets valid and invalid requests from
a fixed seed; every response must be no 5xx, a status the document lists,
the content type it lists, and match its schema. The document is the
committed file, which the fixture checks is the one Envoy serves at
/sapi/v1/openapi.json. (It is loaded at import, not from the running
Envoy, because schemathesis' lazy loader, ``from_fixture``, does not work
with pytest 9: it reads and rewrites ``Node._nodeid``, which pytest 9 removed.)

Schemathesis tests are synchronous, Hypothesis drives them, so the stack
runs on an event loop in a thread of its own for the module's lifetime.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.calls.support import Device
from tests.sapi.support import active_call, online, sapi_stack
from tests.support.core import add_subscriber, api_key
from tests.support.stack import Stack
from tests.support.timing import seconds

T = TypeVar("T")

DOCUMENT = Path(__file__).resolve().parents[2] / "envoy" / "openapi.json"
# Two phases, both valid and invalid inputs: "coverage" enumerates each
# parameter's boundaries and omissions (deterministic by nature), then
# "fuzzing" draws up to 10 random cases per operation from a fixed seed,
# derandomized so that a CI failure reproduces anywhere. About 550 requests
# in all, in about ten seconds.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261126,
        "generation": {"max-examples": 10, "deterministic": True, "database": "none", "mode": "all"},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True}, "stateful": {"enabled": False}},
    }
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sapi-stack", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(seconds(6))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(seconds())
        self.loop.close()


@dataclass(frozen=True)
class FrontDoor:
    url: str
    headers: dict[str, str]


async def populate(stack: Stack, channel: grpc.aio.Channel) -> list[Device]:
    """Subscribers with every field set, an ended and an active call, so that
    lists and reads return real resources for the response schemas to check."""
    names = ("alice", "bob", "carol", "dave")
    for index, name in enumerate(names):
        # A number has one holder: each its own.
        await add_subscriber(
            stack.core, name, display_name=name.title(), phone_numbers=[f"60011122{index}"], email=f"{name}@example.com"
        )
    alice, bob, carol, dave = devices = [await online(stack, channel, name) for name in names]
    ended = await active_call(alice, bob)
    await alice.hangup(ended.call_id)
    await active_call(carol, dave)
    return devices


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    """A stack with some data in it, and an API key with the admin scope."""
    background = LoopThread()
    stack_context = sapi_stack(tmp_path_factory.mktemp("fuzz"))
    stack = background.run(stack_context.__aenter__())
    channel: grpc.aio.Channel | None = None
    devices: list[Device] = []
    try:

        async def open_channel() -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(f"127.0.0.1:{stack.core.port}")

        key = background.run(api_key(stack.core, "fuzz", "admin"))
        channel = background.run(open_channel())
        devices = background.run(populate(stack, channel))
        served = httpx.get(f"{stack.url}/sapi/v1/openapi.json", timeout=seconds())
        assert served.status_code == 200 and served.json() == json.loads(DOCUMENT.read_text())
        yield FrontDoor(
            url=stack.url,
            headers={"Authorization": f"Bearer {key}"},
        )
    finally:
        for device in devices:
            background.run(device.disconnect())
        if channel is not None:
            background.run(channel.close())
        background.run(stack_context.__aexit__(None, None, None))
        background.close()


@schema.parametrize()
def test_sapi_conforms_to_its_openapi_document(case: schemathesis.Case, front_door: FrontDoor) -> None:
    case.call_and_validate(base_url=front_door.url, headers=front_door.headers, checks=CHECKS)
