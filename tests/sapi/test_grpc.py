"""Native gRPC on Envoy's port reaches the real core: the same methods as
SAPI, with the same credentials, plus health checking and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.server import build_core
from tests.sapi.conftest import Sapi
from tests.sapi.support import sapi_stack
from tests.support.core import add_subscriber, api_key, login
from tests.support.stack import Stack
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc


@pytest.fixture
async def front_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """gRPC to Envoy's front door, the port SAPI is on."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port}") as channel:
        yield channel


async def test_health_check(tmp_path: Path) -> None:
    async with (
        sapi_stack(tmp_path, {"WAC_GATEWAY_ENABLED": "false"}) as stack,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "wac.v1.IdentityService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=seconds())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_not_serving_while_the_enabled_gateway_does_not_answer(
    front_channel: grpc.aio.Channel,
) -> None:
    """The stack's gateway is enabled, and no Kamailio runs: the core is not
    ready, and its Check says why in its trailing metadata."""
    health = health_pb2_grpc.HealthStub(front_channel)
    for service in ("", "wac.v1.CallsService"):
        call = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=seconds())
        assert (await call).status == health_pb2.HealthCheckResponse.NOT_SERVING
        checks = json.loads(dict(await call.trailing_metadata())["wac-readiness"])
        assert checks == {"database": "", "gateway": "Kamailio does not answer on its JSON-RPC listener"}


async def test_identity_with_an_api_key(stack: Stack, sapi: Sapi, front_channel: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice")
    key = await api_key(stack.core, "grpc-gateway", "identity.verify")
    metadata = (("authorization", f"Bearer {key}"),)
    identity = identity_pb2_grpc.IdentityServiceStub(front_channel)

    # Public: the same keys with or without a credential.
    jwks = await identity.GetJwks(identity_pb2.GetJwksRequest(), timeout=seconds())
    assert jwks == await identity.GetJwks(identity_pb2.GetJwksRequest(), metadata=metadata, timeout=seconds())
    over_rest = (await (await sapi("identity.verify")).get("/sapi/v1/jwks")).json()
    assert [(k.kid, k.x, k.y) for k in jwks.keys] == [(k["kid"], k["x"], k["y"]) for k in over_rest["keys"]]

    # Login is public, and works through the front door too.
    session = await login(front_channel, "alice")
    verdict = await identity.VerifyToken(
        identity_pb2.VerifyTokenRequest(token=session.access_token), metadata=metadata, timeout=seconds()
    )
    assert (verdict.active, verdict.session_id) == (True, session.session_id)


async def test_errors_stay_grpc_statuses(stack: Stack, front_channel: grpc.aio.Channel) -> None:
    identity = identity_pb2_grpc.IdentityServiceStub(front_channel)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await identity.ListSubscribers(identity_pb2.ListSubscribersRequest(), timeout=seconds())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The JSON error body is for REST clients; gRPC clients read grpc-message.
    assert not (missing.value.details() or "").startswith("{")

    key = await api_key(stack.core, "reader", "subscribers.read")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await identity.GetSubscriber(
            identity_pb2.GetSubscriberRequest(username="nobody"),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=seconds(),
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "subscriber 'nobody' does not exist"


async def test_reflection_lists_the_services(front_channel: grpc.aio.Channel) -> None:
    """What `grpcurl -plaintext <front door> list` asks, as the README shows."""
    reflection = reflection_pb2_grpc.ServerReflectionStub(front_channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = [answer async for answer in reflection.ServerReflectionInfo(ask(), timeout=seconds())]
    services = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {
        "wac.v1.IdentityService", "wac.v1.CallsService", "wac.v1.EventsService", "grpc.health.v1.Health",
    } <= services  # fmt: skip


async def test_no_check_answers_before_the_first_readiness_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A core starting up must never say SERVING without its checks: the
    edge's /readyz would call the node ready with no word of the gateway.
    The first evaluation is slowed down; Checks race the start all along."""
    from core.readiness import Readiness
    from tests.support.core import test_config
    from tests.support.server import free_port

    evaluate = Readiness.results

    async def slow(self: Readiness) -> Any:
        await asyncio.sleep(0.5)
        return await evaluate(self)

    monkeypatch.setattr(Readiness, "results", slow)
    port = free_port()
    config = test_config(tmp_path / "data", {"WAC_CORE_LISTEN": f"127.0.0.1:{port}"})
    starting = asyncio.create_task(build_core(config))
    answers: list[tuple[int, dict[str, str]]] = []

    async def check(**options: Any) -> None:
        # A channel of its own each time: one refused connection would make
        # a shared one back off past the window that matters.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), **options)
            status = (await call).status
            answers.append((status, json.loads(dict(await call.trailing_metadata())["wac-readiness"])))

    while not starting.done():
        with contextlib.suppress(grpc.aio.AioRpcError):  # not listening yet
            await check(timeout=0.2)
        await asyncio.sleep(0.01)
    core = await starting
    try:
        await check(timeout=seconds())
    finally:
        await core.stop(0.2)
    for status, checks in answers:
        assert set(checks) == {"database", "gateway"}, (status, checks)
