"""The SDK's SIP stack in Chromium: the bundled JsSIP, behind the demo, after
a real login. The gateway (Kamailio) is not part of the stack yet, so the
page's WebSocket to it is answered here, as a registrar and callee would:
what is checked is what the browser sends (the access token as the bearer,
the request URI of a number) and what the demo shows of the answers.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import WebSocketRoute, expect

from tests.browser.support import Demo, Phone, ms

GATEWAY = "ws://gateway.invalid/sip"
DOMAIN = "example.test"


def header(message: str, name: str) -> str | None:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def response(request: str, status: int, phrase: str, *extra: str) -> str:
    """A response to a request, with its dialog headers copied back (RFC 3261 8.2.6.2)."""
    lines = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    copied = [h for h in lines if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
    to = header(request, "To") or ""
    if ";tag=" not in to:
        to += ";tag=gw"
    return "\r\n".join([f"SIP/2.0 {status} {phrase}", *copied, f"To: {to}", *extra, "Content-Length: 0", "", ""])


class Gateway:
    """The page's gateway socket: keeps each request, answers through `answer`."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        self.socket: WebSocketRoute | None = None

    def route(self, socket: WebSocketRoute) -> None:
        self.socket = socket
        socket.on_message(self.received)

    def received(self, message: str | bytes) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        if text.strip():  # not a keep-alive
            self.requests.put_nowait(text)

    async def next(self, method: str) -> str:
        while True:
            request = await asyncio.wait_for(self.requests.get(), ms() / 1000)
            if request.startswith(f"{method} "):
                return request

    def answer(self, request: str, status: int, phrase: str, *extra: str) -> None:
        assert self.socket is not None
        self.socket.send(response(request, status, phrase, *extra))


async def gateway_phone(demo: Demo, username: str) -> tuple[Phone, Gateway]:
    phone = await demo.phone(username, login=False)
    gateway = Gateway()
    await phone.context.route_web_socket(GATEWAY, gateway.route)
    await phone.page.goto(f"{demo.stack.url}/?gateway={GATEWAY}&sipDomain={DOMAIN}", timeout=ms())
    await phone.login()
    return phone, gateway


async def test_without_a_gateway_the_light_is_hidden(demo: Demo) -> None:
    alice = await demo.phone("alice")
    await expect(alice.testid("gateway-state")).to_be_hidden()
    assert await alice.page.evaluate("window.wacDemo.wac.sipRegistration") is None


async def test_registers_with_the_access_token_as_bearer_and_calls_a_number_through_the_gateway(demo: Demo) -> None:
    alice, gateway = await gateway_phone(demo, "alice")
    light = alice.testid("gateway-state")

    # Refused first: the light says so.
    register = await gateway.next("REGISTER")
    token = await alice.page.evaluate("window.wacDemo.wac.session.accessToken")
    assert header(register, "Authorization") == f"Bearer {token}"
    assert register.startswith(f"REGISTER sip:{DOMAIN} SIP/2.0\r\n")
    assert f"<sip:alice@{DOMAIN}>" in (header(register, "To") or "")
    await expect(light).to_have_attribute("data-state", "registering")
    gateway.answer(register, 403, "Forbidden")
    await expect(light).to_have_attribute("data-state", "failed")
    await expect(light).to_contain_text("403")

    # Logged out, the light goes; logged in again, a new registration with the new session's token.
    await alice.testid("logout").click()
    await expect(light).to_be_hidden()
    await alice.login()
    register = await gateway.next("REGISTER")
    token = await alice.page.evaluate("window.wacDemo.wac.session.accessToken")
    assert header(register, "Authorization") == f"Bearer {token}"
    gateway.answer(register, 200, "OK", f"Contact: {header(register, 'Contact')};expires=600")
    await expect(light).to_be_visible()
    await expect(light).to_have_attribute("data-state", "registered")

    # Nobody in the directory has this number: it goes to the gateway.
    await alice.dial("+34 699 000 111", video=False)
    invite = await gateway.next("INVITE")
    assert invite.startswith(f"INVITE sip:+34699000111@{DOMAIN};user=phone SIP/2.0\r\n")
    assert header(invite, "Authorization") == f"Bearer {token}"
    assert "m=audio" in invite
    gateway.answer(invite, 486, "Busy Here")
    await alice.expect_ended("BUSY")
    await expect(alice.panel).to_have_attribute("data-via", "sip")
    await expect(alice.testid("call-status")).to_contain_text("SIP 486")
