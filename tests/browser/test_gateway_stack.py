"""The SDK's SIP stack in Chromium: the bundled JsSIP, behind the demo, after
a real login. The gateway (Kamailio) is not part of the stack yet, so the
page's WebSocket to it is answered here, as a registrar and callee would:
what is checked is what the browser sends (the access token as the bearer,
the request URI of a number, an answer with DTLS-SRTP media) and what the
demo shows of the answers; a call from the gateway has its far end in a
second page, so media flows between two real peer connections.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, WebSocketRoute, expect

from tests.browser.support import Demo, Phone, ms
from tests.support.timing import seconds

GATEWAY = "ws://gateway.invalid/sip"
DOMAIN = "example.test"


def header(message: str, name: str) -> str | None:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def response(request: str, status: int, phrase: str, *extra: str, sdp: str = "") -> str:
    """A response to a request, with its dialog headers copied back (RFC 3261 8.2.6.2)."""
    lines = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    copied = [h for h in lines if h.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
    to = header(request, "To") or ""
    if ";tag=" not in to:
        to += ";tag=gw"
    body = ["Content-Type: application/sdp"] if sdp else []
    head = [f"SIP/2.0 {status} {phrase}", *copied, f"To: {to}", *extra, *body, f"Content-Length: {len(sdp.encode())}"]
    return "\r\n".join(head) + "\r\n\r\n" + sdp


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

    async def response(self, status: int) -> str:
        while True:
            message = await self.next("SIP/2.0")
            if message.startswith(f"SIP/2.0 {status} "):
                return message

    def send(self, message: str) -> None:
        assert self.socket is not None, "the page opened no gateway socket"
        self.socket.send(message)

    def answer(self, request: str, status: int, phrase: str, *extra: str, sdp: str = "") -> None:
        self.send(response(request, status, phrase, *extra, sdp=sdp))


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


# The far end of a gateway call, in another page: a peer connection with the
# fake microphone, whose offer the test carries to the SDK in an INVITE.
FAR_END_OFFER_JS = """async () => {
  const pc = new RTCPeerConnection();
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
  });
  window.farEnd = pc;
  return pc.localDescription.sdp;
}"""
DTMF_JS = """() => {
  const call = window.wacDemo.call;
  call.sendDtmf("1#", { durationMs: 200 });
  return call.peerConnection.getSenders().find((s) => s.track?.kind === "audio").dtmf.toneBuffer;
}"""
# The far end answers an offer (a re-INVITE's) and returns its answer.
FAR_END_ANSWER_JS = """async (sdp) => {
  await window.farEnd.setRemoteDescription({ type: "offer", sdp });
  await window.farEnd.setLocalDescription(await window.farEnd.createAnswer());
  return window.farEnd.localDescription.sdp;
}"""
FAR_END_BYTES_JS = """async () => {
  let bytes = 0;
  (await window.farEnd.getStats()).forEach((s) => { if (s.type === "inbound-rtp") bytes += s.bytesReceived ?? 0; });
  return bytes;
}"""


async def far_end_bytes_grow(page: Page, by: int = 2000) -> None:
    """Waits until the far end's inbound RTP grew by ``by`` bytes. Polled from
    here: page.wait_for_function takes an async predicate's Promise as true."""
    start = await page.evaluate(FAR_END_BYTES_JS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(1)
    while (now := await page.evaluate(FAR_END_BYTES_JS)) < start + by:
        if loop.time() > deadline:
            raise AssertionError(f"the far end received {now - start} bytes, not {by}")
        await asyncio.sleep(0.1)


def request(method: str, uri: str, cseq: int, dialog: dict[str, str], body: str = "") -> str:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/WSS gateway.invalid;branch=z9hG4bK{method.lower()}{cseq}",
        "Max-Forwards: 70",
        f"From: {dialog['from']}",
        f"To: {dialog['to']}",
        f"Call-ID: {dialog['call_id']}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:gw@gateway.invalid;transport=ws>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def test_a_call_from_the_gateway_rings_is_answered_with_media_both_ways_and_ends_with_its_bye(demo: Demo) -> None:
    alice, gateway = await gateway_phone(demo, "alice")
    register = await gateway.next("REGISTER")
    gateway.answer(register, 200, "OK", f"Contact: {header(register, 'Contact')};expires=600")
    await expect(alice.testid("gateway-state")).to_have_attribute("data-state", "registered")

    far = await demo.phone("bob", login=False)
    offer = await far.page.evaluate(FAR_END_OFFER_JS)
    dialog = {"from": "<sip:+34600999888@example.test>;tag=far1", "to": f"<sip:alice@{DOMAIN}>", "call_id": "gw-call-1"}
    gateway.send(request("INVITE", f"sip:alice@{DOMAIN}", 1, dialog, offer))

    await alice.answer("+34600999888")
    ok = await gateway.response(200)
    assert "a=fingerprint" in ok, "the SDK answered with its DTLS-SRTP media"
    answer_sdp = ok.split("\r\n\r\n", 1)[1]
    await far.page.evaluate("(sdp) => window.farEnd.setRemoteDescription({ type: 'answer', sdp })", answer_sdp)
    dialog["to"] = header(ok, "To") or ""
    contact = (header(ok, "Contact") or "").split("<", 1)[1].split(">", 1)[0]
    gateway.send(request("ACK", contact, 1, dialog))

    await alice.expect_state("active")
    await expect(alice.panel).to_have_attribute("data-via", "sip")
    await alice.wait_media("m => m.state === 'connected'")
    await alice.wait_bytes_grow()
    await far_end_bytes_grow(far.page)

    # Hold and resume are re-INVITEs (sendonly, then sendrecv), done once the far end answered.
    for button, direction, status in (("Hold", "sendonly", "on hold"), ("Resume", "sendrecv", "In call")):
        await expect(alice.testid("hold")).to_have_text(button)
        await alice.testid("hold").click()
        reinvite = await gateway.next("INVITE")
        offer = reinvite.split("\r\n\r\n", 1)[1]
        assert f"a={direction}" in offer, offer
        far_answer = await far.page.evaluate(FAR_END_ANSWER_JS, offer)
        gateway.answer(reinvite, 200, "OK", "Contact: <sip:gw@gateway.invalid;transport=ws>", sdp=far_answer)
        await gateway.next("ACK")
        await expect(alice.testid("call-status")).to_contain_text(status)
    assert await alice.page.evaluate("window.wacDemo.call.onHold") is False

    # DTMF goes in the audio as RFC 4733 events (the RTCDTMFSender), not in SIP INFO.
    queued = await alice.page.evaluate(DTMF_JS)
    assert queued.startswith("1"), queued

    gateway.send(request("BYE", contact, 2, dialog))
    await alice.expect_ended("COMPLETED")
    ended = await alice.wait_ended()
    assert ended[-1]["endedBy"] == "+34600999888"
