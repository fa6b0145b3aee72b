"""One keepalive for every WebSocket of the edge.

websockets' own keepalive runs a task per connection: every ``interval`` it
wakes from its own timer, pings through ``send_context`` and waits for the
pong under a timeout of its own, three task steps and two timers per ping.
Measured at rest with 1,000 logged-in sockets (a stand-in core, 2 CPUs),
that was 10-30 ms of CPU a second, against 1-3.5 ms with no pings at all:
a few hundred microseconds per ping, ten times the cost of delivering an
event, and it landed in every fan-out too.

Here one timer serves them all. The sockets wait in arrival order, and
since each is pinged ``interval`` after the last time, that order is also
the order they are due in: the timer pops those due, pings each (a Ping
frame written as ``ws.ping`` writes it, without a task), and puts it back
at the end. A socket whose pong has not come back ``timeout`` seconds after
its ping is failed with 1011 (keepalive ping timeout), as websockets would.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State


class _Watched:
    """One socket's place in the keepalive; ``ws`` is None once it closed."""

    __slots__ = ("due", "pong", "ws")

    def __init__(self, ws: ServerConnection, due: float) -> None:
        self.ws: ServerConnection | None = ws
        self.due = due
        self.pong: asyncio.Future[float] | None = None

    def forget(self, _: object = None) -> None:
        self.ws = None


class Keepalive:
    """Pings each watched socket every ``interval`` seconds; fails one whose
    pong is ``timeout`` seconds late (None: never). ``close`` stops it."""

    def __init__(self, interval: float, timeout: float | None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.timeout = timeout
        self._due: deque[_Watched] = deque()
        # Each ping's socket and pong, by the time the pong is late, in that order too.
        self._late: deque[tuple[float, _Watched, asyncio.Future[float]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._failing: set[asyncio.Task[None]] = set()

    def watch(self, ws: ServerConnection) -> None:
        """Keep ``ws`` alive from now until it closes."""
        loop = asyncio.get_running_loop()
        watched = _Watched(ws, loop.time() + self.interval)
        ws.connection_lost_waiter.add_done_callback(watched.forget)
        self._due.append(watched)
        self._schedule(loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        self._late.clear()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            return
        times = [self._due[0].due] if self._due else []
        if self._late:
            times.append(self._late[0][0])
        if times:
            self._timer = loop.call_at(min(times), self._run)

    def _run(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._late and self._late[0][0] <= now:
            # This ping's pong, not the socket's latest: with timeout > interval a
            # later ping may be out, and only this one's answer counts here.
            _, watched, pong = self._late.popleft()
            if watched.ws is not None and not pong.done():
                self._fail(watched.ws)
        while self._due and self._due[0].due <= now:
            watched = self._due.popleft()
            ws = watched.ws
            if ws is None:
                continue  # closed: forgotten
            watched.due = now + self.interval
            self._due.append(watched)
            if watched.pong is not None and not watched.pong.done():
                continue  # the last ping is still out (timeout > interval): its deadline stands
            if ws.protocol.state is not State.OPEN:
                continue  # closing: websockets times the close
            watched.pong = pong = self._ping(ws, loop, now)
            if self.timeout is not None:
                self._late.append((now + self.timeout, watched, pong))
        self._schedule(loop)

    @staticmethod
    def _ping(ws: ServerConnection, loop: asyncio.AbstractEventLoop, now: float) -> asyncio.Future[float]:
        """What ``ws.ping()`` does when the socket is open, without awaiting
        its send context: the pong resolves the future (websockets matches it)."""
        data = struct.pack("!I", random.getrandbits(32))
        while data in ws.pending_pings:
            data = struct.pack("!I", random.getrandbits(32))
        pong: asyncio.Future[float] = loop.create_future()
        ws.pending_pings[data] = (pong, now)
        ws.protocol.send_ping(data)
        ws.send_data()
        return pong

    def _fail(self, ws: ServerConnection) -> None:
        task = asyncio.get_running_loop().create_task(_fail(ws))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)


async def _fail(ws: ServerConnection) -> None:
    """websockets' own end of a dead peer: 1011, then the TCP connection dropped."""
    try:
        async with ws.send_context():
            ws.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    except ConnectionClosed:
        pass
