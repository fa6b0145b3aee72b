"""Issue 14 at the WAPI edge: each attack, bounded, against a real core and edge.

A batch of Logins against the throttle, sockets that never log in, more
sockets than an address may hold, a reader that never reads, a page from a
foreign Origin, a slowloris on the HTTP port, malformed input that used to
be a 500, and the headers of the demo and the SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from core.server import Core
from edges.wapi.http import DEMO_CSP, DEMO_INLINE_HANDLERS, csp_hash
from edges.wapi.server import DEFAULT_DEMO_DIR, Edge, start_edge
from tests.support.core import add_subscriber, running_core
from tests.support.timing import seconds
from tests.wapi.conftest import EdgeFactory, edge_config
from tests.wapi.support import PASSWORD, close_code, eventually, wapi
from tests.wapi.test_events import publish

pytestmark = pytest.mark.usefixtures("alice")

RESOURCE_EXHAUSTED = 8
UNAUTHENTICATED = 16


def rpc(method: str, params: dict[str, Any], request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


@asynccontextmanager
async def http_client(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=seconds(2)) as client:
        yield client


# -- item 1: a batch of Logins runs one after another ------------------------------
@pytest.fixture
async def strict_throttle(tmp_path: Path) -> AsyncIterator[Edge]:
    """A core whose throttle, after 3 failures, makes the next attempt wait a
    minute (so a refusal cannot expire during the batch), and its edge."""
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "3", "WAC_IDENTITY_THROTTLE_DELAY": "60"}
    async with running_core(tmp_path / "strict", env) as core:
        await add_subscriber(core, "carol")
        edge = await start_edge(edge_config(tmp_path / "strict", core.port))
        try:
            yield edge
        finally:
            await edge.stop()


def guessing_batch() -> list[dict[str, Any]]:
    """19 wrong passwords, then the right one."""
    passwords = [f"guess {n}" for n in range(19)] + [PASSWORD]
    return [
        rpc("IdentityService.Login", {"username": "carol", "password": password}, request_id=n)
        for n, password in enumerate(passwords)
    ]


def assert_throttled_in_order(replies: list[dict[str, Any]]) -> None:
    by_id = {reply["id"]: reply for reply in replies}
    assert sorted(by_id) == list(range(20))
    codes = [by_id[n].get("error", {}).get("code") for n in range(20)]
    # Evaluated one by one: three wrong passwords, then the throttle refuses
    # every later attempt, the right password included.
    assert codes[:3] == [UNAUTHENTICATED] * 3, codes
    assert codes[3:] == [RESOURCE_EXHAUSTED] * 17, codes
    assert "result" not in by_id[19]


async def test_a_batch_of_logins_over_websocket_meets_the_throttle(strict_throttle: Edge) -> None:
    async with wapi(strict_throttle) as client:
        await client.send(guessing_batch())
        assert_throttled_in_order(await client.recv(seconds(4)))


async def test_a_batch_of_logins_over_http_meets_the_throttle(strict_throttle: Edge) -> None:
    async with http_client(strict_throttle) as http:
        response = await http.post("/wapi/http", json=guessing_batch(), timeout=seconds(4))
        assert response.status_code == 200
        assert_throttled_in_order(response.json())


# -- item 7: connections per address, and sockets that never log in ------------------
async def test_an_address_holds_at_most_max_connections_per_address(start: EdgeFactory) -> None:
    edge = await start(max_connections_per_address=5, auth_deadline=seconds(4))
    async with AsyncExitStack() as sockets:
        clients = [await sockets.enter_async_context(wapi(edge)) for _ in range(5)]
        for _ in range(3):
            with pytest.raises(InvalidStatus) as refused:
                await sockets.enter_async_context(wapi(edge))
            response = refused.value.response
            assert response.status_code == 429
            assert response.headers["Content-Type"] == "application/json"
            error = json.loads(response.body)["error"]
            assert error["code"] == RESOURCE_EXHAUSTED and "at most 5" in error["message"]
        # The HTTP fallback counts against the same connections.
        async with http_client(edge) as http:
            over = await http.post("/wapi/http", json=rpc("IdentityService.GetJwks", {}))
            assert over.status_code == 429
            assert over.json()["error"]["code"] == RESOURCE_EXHAUSTED
        assert edge.connections == 5
        # A connection that ends gives its slot back.
        await clients[0].ws.close()
        await eventually(lambda: edge.connections == 4)
        await eventually_admitted(edge)


async def test_the_cap_counts_a_forwarded_address_only_from_the_hop(start: EdgeFactory) -> None:
    edge = await start(max_connections_per_address=2, auth_deadline=seconds(4))
    async with AsyncExitStack() as sockets:
        # X-Forwarded-For without the hop key is anyone's invention: all
        # three come from this test's own address.
        for n in range(2):
            await sockets.enter_async_context(wapi(edge, additional_headers={"X-Forwarded-For": f"192.0.2.{n}"}))
        with pytest.raises(InvalidStatus) as refused:
            await sockets.enter_async_context(wapi(edge, additional_headers={"X-Forwarded-For": "192.0.2.9"}))
        assert refused.value.response.status_code == 429
        # Envoy's (with the hop key) are counted per browser.
        for n in range(2):
            forwarded = {"X-Forwarded-For": f"198.51.100.{n}", "x-wac-hop": edge.client.hop_key}
            await sockets.enter_async_context(wapi(edge, additional_headers=forwarded))
        assert edge.connections == 4


async def eventually_admitted(edge: Edge) -> None:
    """The server notices the TCP close a moment after the WebSocket close."""
    deadline = asyncio.get_running_loop().time() + seconds()
    while True:
        try:
            async with wapi(edge) as client:
                assert (await client.request("IdentityService.GetJwks", {}))["id"] == 1  # answered
                return
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            assert asyncio.get_running_loop().time() < deadline, "the slot was never given back"
            await asyncio.sleep(0.05)


async def test_a_socket_that_does_not_log_in_is_closed_4401(start: EdgeFactory) -> None:
    # Long enough for a Login on a loaded machine (it also gets one more
    # deadline when still being checked), short enough for a test.
    deadline = seconds(0.4)
    edge = await start(auth_deadline=deadline)
    async with wapi(edge) as first:
        token = (await first.login("alice"))["accessToken"]
    async with (
        wapi(edge) as idle,
        wapi(edge) as guessing,
        wapi(edge, "not-a-token") as junk_token,
        wapi(edge) as logged_in,
        wapi(edge, token) as with_token,
    ):
        # At once: each socket's clock started when it opened, and a Login
        # (argon2) on a loaded machine must not eat the token socket's time.
        _, subscriber = await asyncio.gather(
            logged_in.login("alice"), with_token.result("IdentityService.GetSubscriber", {"username": "alice"})
        )
        assert subscriber["username"] == "alice"
        assert (await guessing.error("IdentityService.Login", {"username": "alice", "password": "no"}))["code"] == 16
        for client in (idle, guessing, junk_token):
            closed = await client.closed(deadline + seconds())
            assert close_code(closed) == 4401
            assert closed.rcvd is not None and f"no login within {deadline:g} s" in closed.rcvd.reason
        # The deadline has passed: the authenticated sockets stay and work.
        for client in (logged_in, with_token):
            assert (await client.result("IdentityService.GetSubscriber", {"username": "alice"}))["username"]
        assert edge.connections == 2


# -- item 10: the outbox is bounded in bytes -------------------------------------------
async def test_a_reader_that_never_reads_is_closed_4408_by_bytes(
    core: Core, start: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wac.edge")
    bound = 128 * 1024
    # Far more messages than will ever be queued: only the bytes can close it.
    edge = await start(send_queue=100_000, send_queue_bytes=bound)
    async with wapi(edge, max_size=None, max_queue=1) as client:
        await client.login("alice")
        await client.result("EventsService.Subscribe", {})
        client.ws.transport.pause_reading()
        # 32 KB events, as large as a call offer, until the edge gives up on
        # the socket; at most 400 (12.8 MB, beyond both ends' socket buffers).
        published = 0
        while edge.connections and published < 400:
            await publish(core, published + 1, 20, note_bytes=32_000)
            published += 20
        await eventually(lambda: edge.connections == 0)
        client.ws.transport.resume_reading()
        assert close_code(await client.closed()) == 4408
    closes = [r for r in caplog.records if r.getMessage() == "closing a websocket" and getattr(r, "code", 0) == 4408]
    assert closes, "the edge logged no 4408"
    queued = getattr(closes[0], "queued_bytes")  # noqa: B009 - an extra of the log record
    # It closed once the queued bytes passed the bound, and never held more
    # than the burst allowance (4 x the bound) plus the message at hand.
    assert bound < queued + 33_000
    assert queued <= 4 * bound + 33_000


# -- item 15: Origin, slowloris, headers ------------------------------------------------
async def test_a_page_from_a_foreign_origin_is_refused_403(edge: Edge) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with wapi(edge, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    error = json.loads(refused.value.response.body)["error"]
    assert error["code"] == 7 and "evil.example" in error["message"]
    async with http_client(edge) as http:
        response = await http.post(
            "/wapi/http", json=rpc("IdentityService.GetJwks", {}), headers={"Origin": "http://evil.example"}
        )
        assert response.status_code == 403 and response.json()["error"]["code"] == 7
        response = await http.get("/wapi/http/events", headers={"Origin": "http://evil.example"})
        assert response.status_code == 403
        # The demo's own origin (the edge's HTTP port) and the front door's.
        for origin in (f"http://127.0.0.1:{edge.http_port}", "http://localhost:8080", "http://127.0.0.1:8080"):
            response = await http.post(
                "/wapi/http", json=rpc("IdentityService.GetJwks", {}), headers={"Origin": origin}
            )
            assert response.status_code == 200, origin
    origins: tuple[str | None, ...] = (None, f"http://localhost:{edge.http_port}", "http://127.0.0.1:8080")
    for allowed in origins:
        async with wapi(edge, origin=allowed) as client:
            assert (await client.request("IdentityService.GetJwks", {}))["id"] == 1  # answered


async def test_allowed_origins_replace_the_defaults(start: EdgeFactory) -> None:
    edge = await start(allowed_origins="https://phone.example, https://other.example")
    async with wapi(edge, origin="https://phone.example") as client:
        assert (await client.request("IdentityService.GetJwks", {}))["id"] == 1  # answered
    with pytest.raises(InvalidStatus) as refused:
        async with wapi(edge, origin=f"http://127.0.0.1:{edge.http_port}"):
            pass
    assert refused.value.response.status_code == 403


async def test_slowloris_connections_are_closed_after_header_timeout(start: EdgeFactory) -> None:
    edge = await start(header_timeout=0.5)
    # Both ports: the HTTP one (aiohttp) and the WebSocket's upgrade (websockets).
    connections = [await asyncio.open_connection("127.0.0.1", edge.http_port) for _ in range(5)]
    connections += [await asyncio.open_connection("127.0.0.1", edge.ws_port) for _ in range(3)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        # A header line every 100 ms, never the blank line that ends them.
        writer.write(b"GET /wapi HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for n in range(100):
            writer.write(f"X-Slow-{n}: x\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.1)

    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in connections]
    try:
        async with asyncio.timeout(seconds(0.6)):
            for reader, _ in connections:
                assert await closed_unanswered(reader)
    finally:
        for task in tricklers:
            task.cancel()
        await asyncio.gather(*tricklers, return_exceptions=True)
        for _, writer in connections:
            writer.close()
    # A client that sends its request at once is served.
    async with http_client(edge) as http:
        assert (await http.get("/sdk/wac.js")).status_code in (200, 404)


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """The edge closed the connection (an end of stream, or a reset from an abort)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_demo_and_sdk_carry_security_headers(edge: Edge) -> None:
    async with http_client(edge) as http:
        for path in ("/", "/index.html", "/sdk/wac.js", "/wapi/http/events", "/no/such/file"):
            response = await http.get(path)
            assert response.headers["X-Content-Type-Options"] == "nosniff", path
            assert response.headers["X-Frame-Options"] == "DENY", path
            assert response.headers["Referrer-Policy"] == "no-referrer", path
            policy = response.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy, path
        demo = await http.get("/")
        assert demo.headers["Content-Security-Policy"] == DEMO_CSP
        assert "default-src 'self'" in DEMO_CSP and "connect-src 'self' ws: wss:" in DEMO_CSP
        sdk = await http.get("/sdk/wac.js")
        assert sdk.headers["Content-Security-Policy"].startswith("default-src 'none'")


class _Handlers(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [value or "" for name, value in attrs if name.startswith("on")]
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_demo_csp_allows_every_inline_handler_of_index_html() -> None:
    page = _Handlers()
    page.feed((DEFAULT_DEMO_DIR / "index.html").read_text())
    assert page.inline_scripts == 0, "inline <script>: the demo's CSP does not allow it"
    for handler in page.handlers:
        assert handler in DEMO_INLINE_HANDLERS and csp_hash(handler) in DEMO_CSP, handler


# -- item 14: malformed input is a 4xx with a JSON error, never a 500 --------------
async def test_after_seq_beyond_int64_is_400(edge: Edge) -> None:
    async with http_client(edge) as http:
        for after in ("9223372036854775808", "9999999999999999999", "²", "1" * 40, "-1"):
            response = await http.get(
                "/wapi/http/events", params={"afterSeq": after}, headers={"Authorization": "Bearer x"}
            )
            assert response.status_code == 400, (after, response.text)
            assert response.json()["error"]["code"] == 3


@pytest.mark.parametrize("path", ["/sdk/wac.js%00.txt", "/sdk/%ff%fe", "/%00", "/%ff", "/sdk/a%01b", "/sdk/%c0%af"])
async def test_nul_and_bad_percent_encoding_in_a_path_are_not_a_500(edge: Edge, path: str) -> None:
    async with http_client(edge) as http:
        response = await http.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert response.json()["error"]["code"] in (3, 5)


PARSE_ERRORS = [
    '{"jsonrpc": "2.0", "id": 1, "method": "X.Y", "params": {"n": ' + "7" * 5000 + "}}",
    "[" * 50_000 + "]" * 50_000,
    '{"a":' * 20_000 + "1" + "}" * 20_000,
]


@pytest.mark.parametrize("frame", PARSE_ERRORS, ids=["long number", "nested arrays", "nested objects"])
async def test_a_parse_error_names_the_json_problem_only(start: EdgeFactory, frame: str) -> None:
    edge = await start(max_message_bytes=200_000)
    async with wapi(edge) as client:
        await client.send(frame)
        error = (await client.recv())["error"]
        assert error["code"] == -32700
        for python in ("sys.", "set_int_max_str_digits", "recursion", "Python", "unicode string"):
            assert python not in error["message"], error["message"]
    async with http_client(edge) as http:
        response = await http.post("/wapi/http", content=frame, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json()["error"]["code"] == -32700


async def test_deeply_nested_params_are_a_client_error(edge: Edge) -> None:
    nested = '{"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": {"username": ' + (
        "[" * 900 + "]" * 900 + "}}"
    )
    async with wapi(edge) as client:
        await client.send(nested)
        error = (await client.recv())["error"]
        assert error["code"] in (-32700, -32602), error
