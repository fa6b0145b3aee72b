"""A small WAPI client over a real websockets connection, for the tests.

Every wait is a multiple of tests.support.timing.TIMEOUT.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from edges.wapi.server import Edge
from tests.support.timing import seconds

PASSWORD = "correct horse"


class WapiClient:
    """JSON-RPC over one WebSocket: requests matched by id, notifications kept in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.notifications: deque[dict[str, Any]] = deque()

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float | None = None) -> Any:
        text = await asyncio.wait_for(self.ws.recv(), seconds() if timeout is None else timeout)
        return json.loads(text)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its whole response; notifications meanwhile are kept."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.response(request_id)

    async def response(self, request_id: Any) -> dict[str, Any]:
        while True:
            message = await self.recv()
            if isinstance(message, dict) and "method" in message:
                self.notifications.append(message)
                continue
            assert isinstance(message, dict) and message.get("id") == request_id, message
            return message

    async def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        response = await self.request(method, params)
        assert "result" in response, response
        return response["result"]

    async def error(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.request(method, params)
        assert "error" in response, response
        return response["error"]

    async def login(self, username: str, password: str = PASSWORD, device: str = "test") -> dict[str, Any]:
        return await self.result(
            "IdentityService.Login", {"username": username, "password": password, "deviceName": device}
        )

    async def notification(self, timeout: float | None = None) -> dict[str, Any]:
        if self.notifications:
            return self.notifications.popleft()
        message = await self.recv(timeout)
        assert isinstance(message, dict) and "method" in message and "id" not in message, message
        return message

    async def event(self, timeout: float | None = None) -> dict[str, Any]:
        message = await self.notification(timeout)
        assert message["method"] == "event", message
        return message["params"]

    async def events_until(self, kind: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """Events up to and including the first that carries ``kind`` (e.g. "sessionRevoked")."""
        seen = []
        while True:
            event = await self.event(timeout)
            seen.append(event)
            if kind in event:
                return seen

    async def closed(self, timeout: float | None = None) -> ConnectionClosed:
        """Read (and drop) until the server closes; the close as the exception."""
        try:
            async with asyncio.timeout(seconds() if timeout is None else timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as closed:
            return closed
        raise AssertionError("unreachable")  # pragma: no cover


async def eventually(predicate: Callable[[], bool], timeout: float | None = None) -> None:
    """Wait until ``predicate()`` holds, polling; fail after the timeout."""
    deadline = asyncio.get_running_loop().time() + (seconds() if timeout is None else timeout)
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def ws_url(edge: Edge, token: str | None = None) -> str:
    url = f"ws://127.0.0.1:{edge.ws_port}/wapi"
    return f"{url}?access_token={quote(token)}" if token else url


@asynccontextmanager
async def wapi(edge: Edge, token: str | None = None, **options: Any) -> AsyncIterator[WapiClient]:
    async with connect(ws_url(edge, token), open_timeout=seconds(), close_timeout=seconds(0.2), **options) as ws:
        yield WapiClient(ws)


def close_code(closed: ConnectionClosed) -> int | None:
    """The code the server closed with (rcvd), None when no close frame came."""
    return closed.rcvd.code if closed.rcvd is not None else None
