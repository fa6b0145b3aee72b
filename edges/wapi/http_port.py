"""The edge's HTTP port: bound when the edge starts, served by aiohttp from
its first connection on.

aiohttp and the HTTP adapter on it (``http.py``) cost an edge about 11 MiB
resident once imported, a third of its size at rest, while most edges only
ever see WebSockets. So the port is a plain asyncio server until a
connection arrives: that connection (and any arriving meanwhile) is left
unread while aiohttp is imported, in a thread so the WebSockets keep being
served, then handed to aiohttp's protocol as if aiohttp had accepted it.
From then on aiohttp's protocol takes every connection directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from edges.wapi.http import HttpEdge

log = logging.getLogger("wac.edge")


class HttpPort:
    """The HTTP port. ``load`` builds the adapter; it runs in a thread, once,
    at the first connection, and may import what it needs. ``close`` is
    idempotent."""

    def __init__(self, load: Callable[[], HttpEdge]) -> None:
        self._load = load
        self._listener: asyncio.Server | None = None
        self._loading: asyncio.Task[None] | None = None
        self._waiting: set[_Waiting] = set()
        self._edge: HttpEdge | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        """Whether aiohttp serves the port (a connection has arrived)."""
        return self._runner is not None

    async def listen(self, host: str, port: int) -> int:
        """Bind the port (0: any free one); the port bound."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._protocol, host, port)
        bound: int = self._listener.sockets[0].getsockname()[1]
        return bound

    @property
    def polls(self) -> int:
        """Long polls held now (none before the HTTP adapter is loaded)."""
        edge = self._edge
        return 0 if edge is None else edge.polls

    def stop_polls(self) -> None:
        """Answer the held long polls now (the edge is stopping)."""
        if self._edge is not None:
            self._edge.stop_polls()

    async def close(self) -> None:
        """Stop listening, drop the connections still waiting for aiohttp,
        and let aiohttp finish the requests it is answering."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        for waiting in list(self._waiting):
            waiting.transport.close()
        self._waiting.clear()
        if self._runner is not None:
            await self._runner.cleanup()

    def _protocol(self) -> asyncio.BaseProtocol:
        if self._runner is not None:
            server = self._runner.server
            assert server is not None  # set up before _runner is set
            return server()
        return _Waiting(self)

    def _wait(self, waiting: _Waiting) -> None:
        if self._closed:
            # Accepted just before the port closed: no server to hand it to.
            waiting.transport.close()
            return
        self._waiting.add(waiting)
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._start_aiohttp(), name="http-port-load")

    async def _start_aiohttp(self) -> None:
        try:
            edge = await asyncio.to_thread(self._load)
            runner = edge.runner()
            await runner.setup()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The waiting connections are dropped; the next one tries again.
            log.exception("the HTTP port could not start aiohttp")
            for waiting in list(self._waiting):
                waiting.transport.close()
            self._waiting.clear()
            return
        self._edge, self._runner = edge, runner
        for waiting in list(self._waiting):
            waiting.hand_over(self._protocol())
        self._waiting.clear()


class _Waiting(asyncio.Protocol):
    """A connection accepted before aiohttp was ready: not read until it is.
    (The transport starts reading only after ``connection_made`` returns, so
    no byte is read before ``hand_over``.)"""

    transport: asyncio.Transport

    def __init__(self, port: HttpPort) -> None:
        self._port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        self._port._wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._port._waiting.discard(self)

    def hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        if self.transport.is_closing():
            return
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        self.transport.resume_reading()
