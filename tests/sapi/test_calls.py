"""SAPI's operator paths through the real Envoy against the real core: calls
(a real call between two online devices), presence and connectors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from tests.calls.support import Call, Device, eventually
from tests.sapi.conftest import Sapi
from tests.sapi.support import active_call, assert_error, online, rfc3339
from tests.support.core import add_subscriber
from tests.support.stack import Stack
from wac.v1 import directory_pb2, directory_pb2_grpc


@pytest.fixture
async def devices(stack: Stack, core_channel: grpc.aio.Channel) -> AsyncIterator[tuple[Device, Device]]:
    await add_subscriber(stack.core, "alice", display_name="Alice")
    await add_subscriber(stack.core, "bob", display_name="Bob")
    alice, bob = await online(stack, core_channel, "alice"), await online(stack, core_channel, "bob")
    try:
        yield alice, bob
    finally:
        await asyncio.gather(alice.disconnect(), bob.disconnect())


async def test_operator_lists_reads_and_hangs_up_a_call(devices: tuple[Device, Device], sapi: Sapi) -> None:
    alice, bob = devices
    call = await active_call(alice, bob)
    reader, operator = await sapi("calls.read"), await sapi("calls.write")

    listed = await reader.get("/sapi/v1/calls", params={"state": "ACTIVE"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert set(body) == {"calls", "nextPageToken"} and body["nextPageToken"] == ""
    [summary] = body["calls"]
    assert summary["callId"] == call.call_id
    assert (summary["caller"], summary["callee"], summary["state"]) == ("alice", "bob", "ACTIVE")
    assert summary["media"] == {"audio": True, "video": False}
    assert (summary["callerDevice"], summary["calleeDevice"]) == (alice.session_id, bob.session_id)
    assert summary["offeredDevices"] == [bob.session_id]
    assert rfc3339(summary["answerTime"]) >= rfc3339(summary["createTime"])
    assert summary["endReason"] == "END_REASON_UNSPECIFIED"
    # The filters: by subscriber, and a state with no call in it.
    by_bob = (await reader.get("/sapi/v1/calls", params={"subscriber": "bob"})).json()
    assert [c["callId"] for c in by_bob["calls"]] == [call.call_id]
    ringing = (await reader.get("/sapi/v1/calls", params={"state": "RINGING"})).json()
    assert ringing == {"calls": [], "nextPageToken": ""}

    got = await reader.get(f"/sapi/v1/calls/{call.call_id}")
    assert got.status_code == 200 and got.json() == summary, got.text

    hung = await operator.post(f"/sapi/v1/calls/{call.call_id}:hangup")
    assert hung.status_code == 200, hung.text
    ended = hung.json()
    assert (ended["callId"], ended["state"], ended["endReason"], ended["endedBy"]) == (
        call.call_id, "ENDED", "OPERATOR", "operator",
    )  # fmt: skip
    assert rfc3339(ended["endTime"]) >= rfc3339(ended["answerTime"])
    assert ended["duration"].endswith("s")
    # Both devices are told, with the operator as the reason.
    (for_alice,), (for_bob,) = await asyncio.gather(alice.expect("call_ended"), bob.expect("call_ended"))
    assert for_alice.reason == for_bob.reason == Call.OPERATOR

    after = (await reader.get(f"/sapi/v1/calls/{call.call_id}")).json()
    assert (after["state"], after["endReason"]) == ("ENDED", "OPERATOR")
    assert (await reader.get("/sapi/v1/calls", params={"state": "ACTIVE"})).json()["calls"] == []
    # An ended call cannot be hung up again (FAILED_PRECONDITION), and nobody is told twice.
    assert_error(await operator.post(f"/sapi/v1/calls/{call.call_id}:hangup"), 400, 9)
    await asyncio.gather(alice.quiet(), bob.quiet())


async def test_calls_need_their_scopes_and_unknown_calls_are_404(devices: tuple[Device, Device], sapi: Sapi) -> None:
    alice, bob = devices
    call = await active_call(alice, bob)
    reader = await sapi("calls.read")
    denied = assert_error(await reader.post(f"/sapi/v1/calls/{call.call_id}:hangup"), 403, 7)
    assert "calls.write" in denied["message"]
    assert_error(await reader.get("/sapi/v1/calls/AAAAAAAAAAAAAAAAAAAAAA"), 404, 5)
    bad = assert_error(await reader.get("/sapi/v1/calls", params={"state": "SINGING"}), 400, 3)
    assert "state" in bad["message"]


async def presence_if(reader: httpx.AsyncClient, username: str, status: str) -> dict[str, Any] | None:
    """The subscriber's presence over SAPI if its status is ``status`` (for polling)."""
    response = await reader.get(f"/sapi/v1/subscribers/{username}/presence")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body if body["status"] == status else None


async def test_presence(stack: Stack, sapi: Sapi, core_channel: grpc.aio.Channel) -> None:
    await add_subscriber(stack.core, "alice", display_name="Alice")
    reader = await sapi("presence.read")
    response = await reader.get("/sapi/v1/subscribers/alice/presence")
    if getattr(stack.core, "presence", None) is None:
        # A core without the presence service: the path exists, the method does not.
        assert_error(response, 501, 12)
        return

    assert response.status_code == 200, response.text
    offline = response.json()
    assert (offline["username"], offline["displayName"], offline["status"]) == ("alice", "Alice", "OFFLINE")
    assert offline["reason"] == "REASON_UNSPECIFIED"

    device = await online(stack, core_channel, "alice")
    try:
        present = await eventually(lambda: presence_if(reader, "alice", "AVAILABLE"))
        assert present["reason"] == "REASON_UNSPECIFIED"
        assert rfc3339(present["lastSeenTime"])
    finally:
        await device.disconnect()

    assert_error(await reader.get("/sapi/v1/subscribers/nobody/presence"), 404, 5)
    denied = assert_error(await (await sapi("calls.read")).get("/sapi/v1/subscribers/alice/presence"), 403, 7)
    assert "presence.read" in denied["message"]


async def test_presence_shows_an_active_call(devices: tuple[Device, Device], stack: Stack, sapi: Sapi) -> None:
    alice, bob = devices
    await active_call(alice, bob)
    reader = await sapi("presence.read")
    present = await eventually(lambda: presence_if(reader, "bob", "BUSY"))
    assert present["reason"] == "IN_CALL"


async def test_connectors_answer_as_the_core_does(sapi: Sapi, core_channel: grpc.aio.Channel) -> None:
    """SAPI says what the core says: the list (possibly empty) and a sync of
    an unknown connector, compared with the same calls made over gRPC."""
    admin = await sapi("connectors.admin")
    listed = await admin.get("/sapi/v1/connectors")
    synced = await admin.post("/sapi/v1/connectors/no-such-connector:sync", json={})

    directory = directory_pb2_grpc.DirectoryServiceStub(core_channel)
    metadata = (("authorization", admin.headers["authorization"]),)
    try:
        direct = await directory.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        assert_error(listed, HTTP_STATUS[error.code()], error.code().value[0])
    else:
        assert listed.status_code == 200, listed.text
        assert [c["name"] for c in listed.json()["connectors"]] == [c.name for c in direct.connectors]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await directory.SyncConnector(directory_pb2.SyncConnectorRequest(name="no-such-connector"), metadata=metadata)
    code = failure.value.code()
    body = assert_error(synced, HTTP_STATUS[code], code.value[0])
    assert body["message"] == failure.value.details()
    assert_error(await (await sapi("calls.read")).get("/sapi/v1/connectors"), 403, 7)


# google.rpc.Code's own HTTP mapping, which the transcoder follows.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}
