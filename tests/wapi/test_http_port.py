"""The HTTP port (edges/wapi/http_port.py): bound at start, aiohttp loaded at
its first connection, the connections that arrived meanwhile answered."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edges.wapi.http_port import HttpPort
from edges.wapi.server import Edge
from tests.support.timing import seconds

pytestmark = pytest.mark.usefixtures("alice")

REQUEST = b"GET /wapi/http/events HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"


async def answer(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    try:
        return await asyncio.wait_for(reader.read(), seconds(5))
    finally:
        writer.close()


async def test_aiohttp_starts_at_the_first_connection_and_answers_every_one_that_waited(edge: Edge) -> None:
    assert not edge.http.loaded
    answers = await asyncio.gather(*(answer(edge.http_port) for _ in range(5)))
    assert edge.http.loaded
    # Each read whole by aiohttp: no token, so 401 with the JSON-RPC error.
    for reply in answers:
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
        assert b'"error"' in reply
    assert (await answer(edge.http_port)).startswith(b"HTTP/1.1 401")


async def test_closing_while_aiohttp_loads_drops_the_waiting_connections() -> None:
    release = threading.Event()

    def load() -> object:
        release.wait(seconds(5))
        raise RuntimeError("not to be used")

    http = HttpPort(load)  # type: ignore[arg-type]
    port = await http.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await asyncio.sleep(0.05)
    await http.close()
    release.set()
    # Unread bytes on a closed socket: a reset rather than an end of file.
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), seconds(5))
    writer.close()
    assert not http.loaded


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def pause_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


async def test_a_connection_accepted_as_the_port_closes_is_dropped_without_loading() -> None:
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        raise RuntimeError("not to be used")

    http = HttpPort(load)  # type: ignore[arg-type]
    await http.listen("127.0.0.1", 0)
    # What the listener made for a connection it accepted just before close().
    protocol = http._protocol()
    await http.close()
    transport = _Transport()
    protocol.connection_made(transport)
    await asyncio.sleep(0.05)
    assert transport.closed
    assert loads == []
