"""Native gRPC is rate-limited per caller like the WAPI (issue 14, item 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from core.server import Core
from tests.support.core import add_subscriber, login, running_core
from wac.v1 import identity_pb2, identity_pb2_grpc, presence_pb2, presence_pb2_grpc

BURST = 5
# Slow enough that no token comes back while a test runs.
RATE = {"WAC_CORE_RATE_BURST": str(BURST), "WAC_CORE_RATE_PER_SECOND": "0.05"}


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    async with (
        running_core(tmp_path / "data", RATE) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        yield core, channel


async def get_presence(channel: grpc.aio.Channel, token: str, username: str) -> grpc.StatusCode:
    stub = presence_pb2_grpc.PresenceServiceStub(channel)
    try:
        await stub.GetPresence(
            presence_pb2.GetPresenceRequest(username=username), metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_subscriber_flooding_gets_resource_exhausted_and_another_is_unaffected(
    limited: tuple[Core, grpc.aio.Channel],
) -> None:
    core, channel = limited
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    # Login is a public call, counted against the address; the sessions
    # are then counted on their own.
    alice, bob = await login(channel, "alice"), await login(channel, "bob")
    codes = [await get_presence(channel, alice.access_token, "alice") for _ in range(BURST + 3)]
    assert codes[:BURST] == [grpc.StatusCode.OK] * BURST
    assert codes[BURST:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert await get_presence(channel, bob.access_token, "bob") == grpc.StatusCode.OK


async def test_the_refusal_says_when_to_retry(limited: tuple[Core, grpc.aio.Channel]) -> None:
    core, channel = limited
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    stub = presence_pb2_grpc.PresenceServiceStub(channel)
    metadata = (("authorization", f"Bearer {alice.access_token}"),)
    for _ in range(BURST):
        await stub.GetPresence(presence_pb2.GetPresenceRequest(username="alice"), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetPresence(presence_pb2.GetPresenceRequest(username="alice"), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many calls" in (refused.value.details() or "")
    details = dict(refused.value.trailing_metadata() or ())["grpc-status-details-bin"]
    retry = error_details_pb2.RetryInfo()
    assert status_pb2.Status.FromString(details).details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1 / 0.05


async def test_anonymous_calls_are_counted_per_address(limited: tuple[Core, grpc.aio.Channel]) -> None:
    _core, channel = limited
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    codes = []
    for _ in range(BURST + 2):
        try:
            await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token="junk"))
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED not in codes[:BURST]
    assert codes[BURST:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
