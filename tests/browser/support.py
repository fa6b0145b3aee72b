"""The demo softphone in headless Chromium, driven by Playwright, against a
real stack (core, edge, Envoy): finding Chromium, building the SDK bundle,
and a page object per logged-in user.

Every wait is bounded by a multiple of tests.support.timing's constant.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, Playwright, Route, WebSocketRoute, expect

from tests.support.core import add_subscriber
from tests.support.stack import Stack, running_stack
from tests.support.system import require_program
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
ARTIFACTS = ROOT / "test-artifacts"

# Debian's /usr/bin/chromium is a shell wrapper that prints a harmless error
# under Playwright; the binary behind it is used when it is there.
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 860}

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
PEOPLE = {"alice": "Alice Liddell", "bob": "Bob Marley"}
PHONES = {"bob": ["+34 600 111 222"]}

# The WAPI's WebSocket, with or without ?access_token= (not /wapi/http).
WAPI_SOCKET = re.compile(r"/wapi(\?.*)?$")
WAPI_HTTP = re.compile(r"/wapi/http")


def ms(multiple: float = 1.0) -> float:
    """A Playwright timeout (milliseconds), as a multiple of the test timeout."""
    return seconds(multiple) * 1000


def chromium_path() -> str:
    if os.path.exists(CHROMIUM_BINARY):
        return CHROMIUM_BINARY
    return require_program("chromium", "apt-get install chromium")


def ensure_sdk_bundle() -> None:
    """Builds clients/js/dist when missing or older than the SDK's sources."""
    bundle = JS / "dist" / "wac.js"
    sources = [p for p in (JS / "src").rglob("*.ts")]
    if bundle.is_file() and all(p.stat().st_mtime <= bundle.stat().st_mtime for p in sources):
        return
    npm = require_program("npm", "install Node.js 20 and npm to build the JS SDK")
    steps = [] if (JS / "node_modules").is_dir() else [[npm, "ci", "--no-audit", "--no-fund"]]
    for command in [*steps, [npm, "run", "build"]]:
        done = subprocess.run(command, check=False, cwd=JS, capture_output=True, text=True, timeout=seconds(24))
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command[1:])}` in clients/js failed:\n{done.stdout}\n{done.stderr}")


async def launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


# Reads a peer connection from the page: state, each transceiver's
# negotiated direction, and the bytes received over inbound RTP and sent
# over outbound RTP.
MEDIA_JS = """async () => {
  const pc = window.wacDemo?.call?.peerConnection;
  if (!pc) return null;
  let bytes = 0, sent = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") bytes += s.bytesReceived ?? 0;
    if (s.type === "outbound-rtp") sent += s.bytesSent ?? 0;
  });
  return {
    state: pc.connectionState,
    directions: pc.getTransceivers().map((t) => t.currentDirection),
    bytes,
    sent,
  };
}"""


@dataclass
class Phone:
    """The demo logged in as one user, in its own browser context (its own "tab")."""

    username: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    # While True, this phone's network to wac is gone (go_offline).
    away: bool = False
    _routed: bool = False

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    @property
    def panel(self) -> Any:
        return self.testid("call-panel")

    async def login(self, password: str | None = None) -> None:
        await self.testid("login-username").fill(self.username)
        await self.testid("login-password").fill(password or PASSWORDS[self.username])
        await self.testid("login-submit").click()
        await expect(self.testid("me")).to_contain_text(self.username, timeout=ms(6))
        await self.wait_connected()

    async def wait_connected(self, transport: str | None = None) -> None:
        state = self.testid("connection-state")
        await expect(state).to_have_attribute("data-state", "connected", timeout=ms(6))
        if transport:
            await expect(state).to_have_attribute("data-transport", transport, timeout=ms())

    async def dial(self, target: str, *, video: bool = True) -> None:
        await self.testid("dial-target").fill(target)
        await self.testid("dial-video").set_checked(video)
        await self.testid("dial-call").click()

    async def ringing_from(self, caller: str) -> Any:
        invite = self.page.locator(f'[data-testid="incoming-call"][data-caller="{caller}"]')
        await expect(invite).to_be_visible(timeout=ms())
        return invite

    async def answer(self, caller: str) -> None:
        await (await self.ringing_from(caller)).get_by_test_id("answer").click()

    async def expect_state(self, state: str, multiple: float = 1.0) -> None:
        await expect(self.panel).to_have_attribute("data-state", state, timeout=ms(multiple))

    async def expect_ended(self, reason: str, multiple: float = 1.0) -> None:
        """The call panel shows the call's end, and the SDK reported it with this reason."""
        await self.expect_state("ended", multiple)
        await expect(self.panel).to_have_attribute("data-end-reason", reason, timeout=ms())

    async def ended(self) -> list[dict[str, str]]:
        """Every call end the demo saw: {callId, direction, peer, reason, endedBy}."""
        return list(await self.page.evaluate("window.wacDemo.ended"))

    async def wait_ended(self, count: int = 1) -> list[dict[str, str]]:
        await self.page.wait_for_function(
            "(n) => window.wacDemo.ended.length >= n", arg=count, timeout=ms(), polling=50
        )
        return await self.ended()

    async def media(self) -> dict[str, Any]:
        media = await self.page.evaluate(MEDIA_JS)
        assert media is not None, f"{self.username} has no peer connection"
        return dict(media)

    async def wait_media(self, predicate: str, multiple: float = 2.0) -> None:
        """Waits until a JS predicate on MEDIA_JS's result holds, e.g. "m => m.state === 'connected'"."""
        # Polled from here: page.wait_for_function takes the Promise of an
        # async predicate (getStats is async) as truthy and returns at once.
        held = f"Boolean(m && ({predicate})(m))"
        check = f"async () => {{ const m = await ({MEDIA_JS})(); return {{ held: {held}, m }}; }}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(multiple)
        while True:
            result = await self.page.evaluate(check)
            if result["held"]:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{self.username}'s media never met {predicate}: {result['m']}")
            await asyncio.sleep(0.1)

    async def wait_bytes_grow(self, by: int = 2000, multiple: float = 1.0, *, key: str = "bytes") -> int:
        """Waits until inbound RTP bytes (``key="sent"``: outbound) grew by
        ``by`` from now; returns the new count."""
        start = (await self.media())[key]
        await self.wait_media(f"m => m.{key} >= {start + by}", multiple)
        return int((await self.media())[key])

    async def record_states(self) -> None:
        """From now on, window.wacStates lists the SDK's connection states."""
        await self.page.evaluate(
            "() => { window.wacStates = []; window.wacDemo.wac.on('state', (s) => window.wacStates.push(s)); }"
        )

    async def wait_reconnected(self) -> None:
        """Waits until the SDK lost its link (since record_states) and is connected again."""
        await self.page.wait_for_function(
            "() => window.wacStates.includes('suspended') && window.wacDemo.wac.state === 'connected'",
            timeout=ms(2),
            polling=50,
        )
        await self.wait_connected()

    async def states(self) -> list[str]:
        return list(await self.page.evaluate("window.wacStates"))

    async def go_offline(self) -> None:
        """The network to wac goes away (the browser's "offline" event drops
        the link) and refuses WebSockets and the HTTP fallback alike until
        go_online; the connection state reads "suspended" meanwhile."""
        if not self._routed:
            await self.context.route_web_socket(WAPI_SOCKET, self._websocket)
            await self.context.route(WAPI_HTTP, self._http)
            self._routed = True
        self.away = True
        await self.page.evaluate("() => window.dispatchEvent(new Event('offline'))")
        await expect(self.testid("connection-state")).to_have_attribute("data-state", "suspended", timeout=ms())

    async def go_online(self) -> None:
        self.away = False
        await self.page.evaluate("() => window.dispatchEvent(new Event('online'))")

    async def _websocket(self, route: WebSocketRoute) -> None:
        if self.away:
            await route.close()
        else:
            route.connect_to_server()

    async def _http(self, route: Route) -> None:
        await (route.abort() if self.away else route.continue_())


async def refuse_websocket(route: WebSocketRoute) -> None:
    """A network that blocks WebSockets: the upgrade never completes."""
    await route.close()


@dataclass
class Demo:
    """A running stack with subscribers alice and bob, and a browser to open phones in."""

    stack: Stack
    browser: Browser
    phones: list[Phone] = field(default_factory=list)

    async def phone(
        self, username: str, *, transport: str | None = None, block_websocket: bool = False, login: bool = True
    ) -> Phone:
        context = await self.browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        if block_websocket:
            await context.route_web_socket(WAPI_SOCKET, refuse_websocket)
        page = await context.new_page()
        page.set_default_timeout(ms(2))
        phone = Phone(username=username, context=context, page=page)
        page.on("pageerror", lambda error: phone.errors.append(str(error)))
        query = f"?transport={transport}" if transport else ""
        await page.goto(f"{self.stack.url}/{query}", timeout=ms())
        if login:
            await phone.login()
        self.phones.append(phone)
        return phone

    async def call(self, caller: Phone, callee: Phone, *, video: bool = True) -> None:
        """caller calls callee, who answers; returns once media flows both ways."""
        await caller.dial(callee.username, video=video)
        await callee.answer(caller.username)
        for phone in (caller, callee):
            await phone.expect_state("active")
            await phone.wait_media("m => m.state === 'connected'")
        for phone in (caller, callee):
            await phone.wait_bytes_grow()


@asynccontextmanager
async def open_demo(
    playwright: Playwright,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    gateway_ws: str | None = None,
    janus_ws: str | None = None,
    roles: Mapping[str, list[str]] | None = None,
) -> AsyncIterator[Demo]:
    """The stack (its front door's /sip to ``gateway_ws``, /janus to
    ``janus_ws`` when given), alice and bob (with ``roles`` by username when
    given), and Chromium."""
    if gateway_ws is None:
        # No Kamailio behind /sip: the core must not announce a gateway at
        # login, or every page would register at a front door answering 503.
        env = {"WAC_GATEWAY_ENABLED": "false", **(env or {})}
    async with AsyncExitStack() as exits:
        stack = await exits.enter_async_context(running_stack(data_dir, env, gateway_ws=gateway_ws, janus_ws=janus_ws))
        for username, password in PASSWORDS.items():
            await add_subscriber(
                stack.core,
                username,
                password,
                display_name=PEOPLE[username],
                phone_numbers=PHONES.get(username, []),
                **({"roles": roles[username]} if roles and username in roles else {}),
            )
        browser = await launch(playwright)
        exits.push_async_callback(browser.close)
        demo = Demo(stack=stack, browser=browser)
        yield demo
        for phone in demo.phones:
            assert not phone.errors, f"{phone.username}'s page threw: {phone.errors}"


def messages(phone: Phone) -> Locator:
    """The messages of the chat thread open in the phone's page."""
    return phone.page.locator('[data-testid="chat-message"]')


async def write(phone: Phone, text: str) -> None:
    """Writes and sends a message in the open chat thread."""
    await phone.testid("chat-text").fill(text)
    await phone.testid("chat-send").click()
