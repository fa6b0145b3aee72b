"""Event subscriptions over the WebSocket: order, resume, revocation, and the
connection limits (rate, size, dead peers, slow readers, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from core.server import Core
from edges.wapi.server import Edge
from tests.support.clock import FakeClock
from tests.support.core import api_key
from tests.support.server import free_port
from tests.support.timing import seconds
from tests.wapi.conftest import EdgeFactory
from tests.wapi.support import WapiClient, close_code, eventually, wapi
from wac.v1 import events_pb2, presence_pb2

pytestmark = pytest.mark.usefixtures("alice")

ROOT = Path(__file__).resolve().parents[2]
MARKER = "marker"


async def publish(core: Core, first: int, count: int, note_bytes: int = 0) -> None:
    """Events for alice whose notes number them; the core's own presence events interleave."""
    for number in range(first, first + count):
        note = str(number).ljust(note_bytes, ".") if note_bytes else str(number)
        presence = presence_pb2.Presence(username=MARKER, status=presence_pb2.Presence.AVAILABLE, note=note)
        await core.events.publish(["alice"], events_pb2.Event(presence_changed=presence))


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [
        int(e["presenceChanged"]["note"].rstrip("."))
        for e in events
        if e.get("presenceChanged", {}).get("username") == MARKER
    ]


async def collect(client: WapiClient, wanted: int) -> list[dict[str, Any]]:
    """Events until ``wanted`` marker events have arrived."""
    events: list[dict[str, Any]] = []
    while len(numbers(events)) < wanted:
        events.append(await client.event())
    return events


def assert_contiguous(events: list[dict[str, Any]], after: int = 0) -> None:
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), seqs


async def test_subscribe_answers_then_delivers_in_order(core: Core, edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        assert await client.result("EventsService.Subscribe", {}) == {}
        await publish(core, 1, 20)
        events = await collect(client, 20)
        assert numbers(events) == list(range(1, 21))
        assert_contiguous(events)
        assert all(set(e) >= {"seq", "time"} for e in events)


async def test_events_waiting_before_subscribe_follow_the_result(core: Core, edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await publish(core, 1, 5)
        await client.send({"jsonrpc": "2.0", "id": "sub", "method": "EventsService.Subscribe", "params": {}})
        first = await client.recv()
        assert first == {"jsonrpc": "2.0", "id": "sub", "result": {}}
        assert numbers(await collect(client, 5)) == [1, 2, 3, 4, 5]


async def test_resume_after_past_retention_is_11(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        error = await client.error("EventsService.Subscribe", {"afterSeq": "99"})
        assert error["code"] == 11
        assert error["data"]["status"] == "OUT_OF_RANGE"
        assert "reload" in error["message"]
        # The socket is fine and can subscribe from scratch.
        assert await client.result("EventsService.Subscribe", {"afterSeq": "0"}) == {}


async def test_subscribe_before_login_is_16(edge: Edge) -> None:
    async with wapi(edge) as client:
        error = await client.error("EventsService.Subscribe", {})
        assert error["code"] == 16 and error["data"]["reason"] == "NOT_LOGGED_IN"


async def test_second_subscription_replaces_the_first(core: Core, edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        await publish(core, 1, 3)
        first = await collect(client, 3)
        # Resume from the last seq received: take what is still in flight
        # (the device's own presence change may follow the markers).
        with contextlib.suppress(TimeoutError):
            while True:
                first.append(await client.event(timeout=seconds(0.5)))
        last = int(first[-1]["seq"])
        await client.result("EventsService.Subscribe", {"afterSeq": str(last)})
        await publish(core, 4, 3)
        second = await collect(client, 3)
        # Each event once: the old stream is gone.
        assert numbers(second) == [4, 5, 6]
        assert_contiguous(first + second)
        late: list[dict[str, Any]] = []
        with pytest.raises(TimeoutError):
            while True:
                late.append(await client.event(timeout=seconds(0.1)))
        assert_contiguous(first + second + late)  # nothing delivered twice


async def test_resume_after_a_dropped_socket_loses_nothing(core: Core, edge: Edge) -> None:
    async with wapi(edge) as client:
        session = await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        await publish(core, 1, 10)
        before = await collect(client, 10)
        # The socket drops without a close handshake.
        client.ws.transport.abort()
    await publish(core, 11, 10)
    last = int(before[-1]["seq"])
    async with wapi(edge, session["accessToken"]) as client:
        await client.result("EventsService.Subscribe", {"afterSeq": str(last)})
        await publish(core, 21, 5)
        after = await collect(client, 15)
    assert numbers(before + after) == list(range(1, 26))
    assert_contiguous(before + after)


async def test_revoke_sessions_delivers_session_revoked_then_closes_4401(core: Core, edge: Edge) -> None:
    key = await api_key(core, "operator", "subscribers.write")
    async with wapi(edge) as phone, wapi(edge) as laptop, wapi(edge, key) as operator:
        sessions = [await phone.login("alice", device="phone"), await laptop.login("alice", device="laptop")]
        for client in (phone, laptop):
            await client.result("EventsService.Subscribe", {})
        await publish(core, 1, 2)
        revoked = await operator.result("IdentityService.RevokeSessions", {"username": "alice"})
        assert revoked == {"revokedCount": 2}
        for client, session in zip((phone, laptop), sessions, strict=True):
            events = await client.events_until("sessionRevoked")
            # The same event reached both sessions, each in its own seq order.
            assert numbers(events) == [1, 2]
            assert_contiguous(events)
            assert events[-1]["sessionRevoked"] == {"sessionId": session["sessionId"], "reason": "revoked"}
            assert close_code(await client.closed()) == 4401


async def test_logout_ends_the_subscription_with_4401(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        assert await client.result("IdentityService.Logout", {}) == {}
        events = await client.events_until("sessionRevoked")
        assert events[-1]["sessionRevoked"]["reason"] == "logout"
        assert close_code(await client.closed()) == 4401


# -- limits ----------------------------------------------------------------------
async def test_rate_limit_then_flood_close_1008(start: EdgeFactory) -> None:
    edge = await start(rate_per_second=1, rate_burst=5, flood_close_after=10)
    async with wapi(edge) as client:
        await client.send([{"jsonrpc": "2.0", "id": n, "method": "No.Such"} for n in range(8)])
        replies = await client.recv()
        assert [r["error"]["code"] for r in replies] == [-32601] * 5 + [-32000] * 3
        limited = replies[-1]["error"]
        assert limited["message"] == "rate limited"
        assert 0 < limited["data"]["retryAfter"] <= 1.0
        # Keep pushing: the tenth refusal without a pause closes the socket.
        for n in range(20):
            try:
                await client.send({"jsonrpc": "2.0", "id": 100 + n, "method": "No.Such"})
            except Exception:
                break
        assert close_code(await client.closed()) == 1008


async def test_rate_limit_recovers_after_a_pause(start: EdgeFactory) -> None:
    clock = FakeClock()
    edge = await start(rate_per_second=20, rate_burst=2, flood_close_after=50, clock=clock.monotonic)
    async with wapi(edge) as client:
        await client.send([{"jsonrpc": "2.0", "id": n, "method": "No.Such"} for n in range(3)])
        assert [r["error"]["code"] for r in await client.recv()] == [-32601, -32601, -32000]
        await clock.advance(0.049)  # not yet one token back at 20 per second
        assert (await client.error("No.Such"))["code"] == -32000
        await clock.advance(0.002)  # one token back: 0.051 s
        assert (await client.error("No.Such"))["code"] == -32601


async def test_oversized_frame_closes_1009(start: EdgeFactory) -> None:
    edge = await start(max_message_bytes=4096)
    async with wapi(edge) as client:
        await client.login("alice")
        await client.send('{"jsonrpc": "2.0", "id": 1, "method": "X.Y", "params": {"pad": "' + "x" * 5000 + '"}}')
        assert close_code(await client.closed()) == 1009


async def test_dead_peer_is_closed(start: EdgeFactory) -> None:
    edge = await start(ping_interval=0.1, ping_timeout=0.1)
    async with wapi(edge, ping_interval=None) as client:
        await client.login("alice")
        assert edge.connections == 1
        # The client stops reading, so it answers no ping.
        client.ws.transport.pause_reading()
        await eventually(lambda: edge.connections == 0)
        client.ws.transport.resume_reading()
        assert close_code(await client.closed()) == 1011


async def test_live_peer_is_kept(start: EdgeFactory) -> None:
    edge = await start(ping_interval=0.05, ping_timeout=seconds(0.1))
    async with wapi(edge, ping_interval=None) as client:
        await client.login("alice")
        await asyncio.sleep(0.4)
        assert (await client.result("IdentityService.GetSubscriber", {"username": "alice"}))["username"] == "alice"


async def test_slow_reader_is_closed_4408_and_resumes(core: Core, start: EdgeFactory) -> None:
    edge = await start(send_queue=8)
    async with wapi(edge, max_size=None, max_queue=4) as client:
        session = await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        # 200 events of 60 KiB: far beyond the socket buffers of both ends.
        await publish(core, 1, 200, note_bytes=60_000)
        await eventually(lambda: edge.connections == 0)
        received: list[dict[str, Any]] = []
        closed = None
        while closed is None:
            try:
                received.append(await client.event())
            except Exception as exc:  # the close, after what was in flight
                closed = exc
        assert close_code(closed) == 4408  # type: ignore[arg-type]
    assert len(numbers(received)) < 200
    # Resume as the SDK does: from the last seq received, again after each
    # close. A backlog of 60 KiB events can overrun an 8-message queue again,
    # but every attempt makes progress and nothing is lost or repeated.
    for _attempt in range(50):
        if len(numbers(received)) == 200:
            break
        last = int(received[-1]["seq"]) if received else 0
        before = len(received)
        with contextlib.suppress(ConnectionClosed):
            async with wapi(edge, session["accessToken"], max_size=None) as client:
                await client.result("EventsService.Subscribe", {"afterSeq": str(last)})
                while len(numbers(received)) < 200:
                    received.append(await client.event())
        assert len(received) > before
    assert numbers(received) == list(range(1, 201))
    assert_contiguous(received)


# -- shutdown ------------------------------------------------------------------
async def test_stop_closes_sockets_1001(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        await edge.stop()
        assert close_code(await client.closed()) == 1001


async def test_wac_edge_stops_on_sigterm_with_1001(core: Core, tmp_path: Path) -> None:
    ws_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WAC_DATA_DIR": str(tmp_path / "data"),
        "WAC_EDGE_LISTEN": f"127.0.0.1:{ws_port}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core.port}",
        "WAC_LOG_LEVEL": "warning",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "edge", env=env, cwd=ROOT)
    try:
        edge = _Ports(ws_port)
        async with asyncio.timeout(seconds(2)):
            while True:
                try:
                    async with wapi(edge):  # type: ignore[arg-type]
                        break
                except OSError:
                    await asyncio.sleep(0.05)
        async with wapi(edge) as client:  # type: ignore[arg-type]
            await client.login("alice")
            process.send_signal(signal.SIGTERM)
            assert close_code(await client.closed()) == 1001
        assert await asyncio.wait_for(process.wait(), seconds()) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class _Ports:
    def __init__(self, ws_port: int) -> None:
        self.ws_port = ws_port
