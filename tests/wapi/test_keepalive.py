"""The edge's one keepalive (edges/wapi/keepalive.py): every socket pinged
from one timer, none with a keepalive task of its own; a dead peer closed
1011 and a live one kept are in test_events.py."""

from __future__ import annotations

import asyncio

import pytest
from websockets.protocol import State

from edges.wapi.keepalive import Keepalive
from tests.wapi.conftest import EdgeFactory
from tests.wapi.support import eventually, wapi

pytestmark = pytest.mark.usefixtures("alice")


async def test_every_socket_is_pinged_from_one_timer(start: EdgeFactory) -> None:
    edge = await start(ping_interval=0.05, ping_timeout=1)
    async with wapi(edge, ping_interval=None) as first, wapi(edge, ping_interval=None) as second:
        await first.login("alice")
        await second.login("alice")
        connections = list(edge.ws_server.connections)
        assert len(connections) == 2
        # websockets records a latency when a pong answers one of its pings.
        await eventually(lambda: all(c.latency > 0 for c in connections))
        assert all(c.keepalive_task is None for c in connections)


async def test_a_closed_socket_is_no_longer_pinged(start: EdgeFactory) -> None:
    edge = await start(ping_interval=0.05, ping_timeout=1)
    assert edge.keepalive is not None
    async with wapi(edge, ping_interval=None) as client:
        await client.login("alice")
        (connection,) = edge.ws_server.connections
    await eventually(lambda: edge.connections == 0)
    await asyncio.sleep(0.15)
    assert connection.pending_pings == {}


def test_the_interval_is_positive() -> None:
    with pytest.raises(ValueError):
        Keepalive(0, 1)


class _Protocol:
    state = State.OPEN

    def send_ping(self, data: bytes) -> None:
        pass


class _Socket:
    """What the keepalive uses of a ServerConnection; answers each ping after ``delay``."""

    def __init__(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.delay = delay
        self.protocol = _Protocol()
        self.pending_pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self.connection_lost_waiter: asyncio.Future[None] = loop.create_future()
        self.pings = 0

    def send_data(self) -> None:
        self.pings += 1
        for data, (pong, _) in list(self.pending_pings.items()):
            asyncio.get_running_loop().call_later(self.delay, self._answer, data, pong)

    def _answer(self, data: bytes, pong: asyncio.Future[float]) -> None:
        self.pending_pings.pop(data, None)
        if not pong.done():
            pong.set_result(self.delay)


async def test_each_ping_is_judged_by_its_own_pong(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pings at 0.2, 0.4, 0.6 s... each answered 0.15 s later, well within the
    # 0.5 s timeout; at 0.7 s, the first ping's deadline, the latest ping
    # (0.6 s) is still out, and must not count against the socket.
    failed: list[object] = []
    keepalive = Keepalive(0.2, 0.5)
    monkeypatch.setattr(keepalive, "_fail", failed.append)
    socket = _Socket(delay=0.15)
    keepalive.watch(socket)  # type: ignore[arg-type]
    await asyncio.sleep(1.3)
    keepalive.close()
    assert socket.pings >= 4
    assert failed == []
