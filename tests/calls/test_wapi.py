"""A basic call between two browsers' worth of WAPI WebSocket clients,
through a real edge in front of a real core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.server import Core
from edges.wapi.server import Edge, start_edge
from tests.calls.support import SDP, eventually
from tests.support.core import add_subscriber
from tests.wapi.conftest import edge_config
from tests.wapi.support import WapiClient, wapi

CALL_EVENTS = ("callInvited", "callRinging", "callAnswered", "callUpdated", "iceCandidate", "callEnded")


@pytest.fixture
async def edge(core: Core, tmp_path: Path) -> AsyncIterator[Edge]:
    started = await start_edge(edge_config(tmp_path / "data", core.port))
    try:
        yield started
    finally:
        await started.stop()


async def online(core: Core, client: WapiClient, username: str) -> str:
    """Log in and subscribe; the session id once the core counts the device online."""
    session = await client.login(username)
    assert await client.result("EventsService.Subscribe", {}) == {}

    async def counted() -> bool:
        return session["sessionId"] in await core.devices.online_devices(username)

    await eventually(counted)
    return str(session["sessionId"])


async def call_event(client: WapiClient) -> tuple[str, dict[str, Any]]:
    """The next call event (presence and other events are skipped)."""
    while True:
        event = await client.event()
        for kind in CALL_EVENTS:
            if kind in event:
                return kind, event[kind]


async def test_basic_call_over_wapi(core: Core, edge: Edge) -> None:
    await add_subscriber(core, "alice", display_name="Alice Liddell")
    await add_subscriber(core, "bob")
    async with wapi(edge) as alice, wapi(edge) as bob:
        await online(core, alice, "alice")
        bob_device = await online(core, bob, "bob")

        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": {"type": "OFFER", "sdp": SDP}})
        assert call["state"] == "RINGING" and call["offeredDevices"] == [bob_device]
        kind, invited = await call_event(bob)
        assert kind == "callInvited"
        assert invited["callerDisplayName"] == "Alice Liddell"
        assert invited["offer"] == {"type": "OFFER", "sdp": SDP}
        assert (await call_event(alice))[0] == "callRinging"

        answered = await bob.result(
            "CallsService.AnswerCall",
            {"callId": call["callId"], "answer": {"type": "ANSWER", "sdp": SDP}},
        )
        assert answered["state"] == "ACTIVE"
        kind, event = await call_event(alice)
        assert kind == "callAnswered" and event["answer"]["type"] == "ANSWER"

        ended = await alice.result("CallsService.HangupCall", {"callId": call["callId"]})
        assert (ended["state"], ended["endReason"], ended["endedBy"]) == ("ENDED", "COMPLETED", "alice")
        kind, event = await call_event(bob)
        assert kind == "callEnded" and event["reason"] == "COMPLETED"

        error = await bob.error("CallsService.GetCall", {"callId": "unknown"})
        assert error["data"]["status"] == "PERMISSION_DENIED"
