"""Conferences in the demo softphone, in headless Chromium, through a real
Janus behind the real front door: three browsers in one room, each
receiving the two others' audio and video; ending for everyone, and the
conference in everyone's call history; a revoked subscriber taken out of
the room; a page whose Janus socket drops rejoins, and so does one whose
wac connection is down past the grace period."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Playwright, WebSocketRoute, expect

from tests.browser.support import Demo, Phone, ms, open_demo
from tests.support.core import add_subscriber, api_key
from tests.support.janus import running_janus
from tests.support.timing import seconds

CAROL = "carol-secret"
JANUS_SOCKET = re.compile(r"/janus$")
# A title with markup, shown as text.
TITLE = "<b>stand-up</b>"
# Seconds a device may be offline before wac counts it out of its rooms.
GRACE = 2

# Inbound bytes per remote participant of this page's conference, by kind.
RECEIVED_JS = """async () => {
  const conference = window.wacDemo.conference;
  if (!conference) return null;
  const out = {};
  for (const [name, participant] of conference.participants) {
    const pc = participant.peerConnection;
    if (!pc) { out[name] = {audio: 0, video: 0}; continue; }
    let audio = 0, video = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'audio') audio += s.bytesReceived || 0;
      if (s.kind === 'video') video += s.bytesReceived || 0;
    });
    out[name] = {audio, video};
  }
  return out;
}"""


@pytest.fixture
async def conferencing(playwright: Playwright, tmp_path: Path) -> AsyncIterator[Demo]:
    shared = {"WAC_CONFERENCES_JANUS_SECRET": secrets.token_urlsafe(24), "WAC_PRESENCE_GRACE_PERIOD": str(GRACE)}
    async with running_janus(tmp_path / "janus", shared) as janus:
        env = {**shared, "WAC_CONFERENCES_JANUS_API_LISTEN": janus.config.conferences.janus_api_listen}
        async with open_demo(playwright, tmp_path / "data", env, janus_ws=janus.ws_listen) as demo:
            await add_subscriber(demo.stack.core, "carol", CAROL, display_name="Carol Danvers")
            yield demo


async def three_in_a_room(demo: Demo, bob_janus: Any = None) -> tuple[Phone, Phone, Phone, str]:
    """alice starts a conference with bob and carol, who join from the
    invitation; ``bob_janus`` routes bob's page's Janus socket."""
    alice, bob = await demo.phone("alice"), await demo.phone("bob")
    carol = await demo.phone("carol", login=False)
    await carol.login(CAROL)
    if bob_janus is not None:
        await bob.page.route_web_socket(JANUS_SOCKET, bob_janus)
    conference_id = await alice.page.evaluate(
        "async (title) => (await window.wacDemo.startConference(title, ['bob', 'carol'], {video: true})).id", TITLE
    )
    for invitee in (bob, carol):
        invitation = invitee.page.locator(
            f'[data-testid="conference-invitation"][data-conference-id="{conference_id}"]'
        )
        await invitation.get_by_test_id("conference-join").click(timeout=ms(2))
    for phone in (alice, bob, carol):
        await expect(phone.testid("conference-panel")).to_have_attribute("data-state", "joined", timeout=ms(4))
    return alice, bob, carol, conference_id


async def received(phone: Phone) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] | None = await phone.page.evaluate(RECEIVED_JS)
    return result or {}


async def wait_receiving(phone: Phone, others: set[str], by: int = 3000, multiple: float = 4) -> None:
    """Until this page received ``by`` more bytes of audio and of video
    from each of ``others``, counted from the first moment it received some
    of both from all of them."""
    kinds = ("audio", "video")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(multiple)
    start: dict[str, dict[str, int]] | None = None
    while True:
        now = await received(phone)
        flowing = set(now) >= others and all(now[name][kind] > 0 for name in others for kind in kinds)
        if start is None and flowing:
            start = now
        if start is not None and all(now[name][kind] >= start[name][kind] + by for name in others for kind in kinds):
            return
        if loop.time() > deadline:
            raise AssertionError(f"{phone.username} does not receive both media of {others}: {now}")
        await asyncio.sleep(0.2)


async def test_three_browsers_in_one_room_each_receive_the_two_others_and_the_end_reaches_all(
    conferencing: Demo,
) -> None:
    alice, bob, carol, _ = await three_in_a_room(conferencing)
    names = {"alice", "bob", "carol"}
    await asyncio.gather(*(wait_receiving(phone, names - {phone.username}) for phone in (alice, bob, carol)))

    await alice.testid("conference-end").click()
    for phone in (alice, bob, carol):
        panel = phone.testid("conference-panel")
        await expect(panel).to_have_attribute("data-state", "ended", timeout=ms(2))
    for phone in (bob, carol):
        await expect(phone.testid("conference-panel")).to_have_attribute("data-end-reason", "ended")
    # The conference in everyone's call history, its title as text.
    for phone in (alice, bob, carol):
        row = phone.page.locator('[data-testid="history-row"][data-via="conference"]')
        await expect(row).to_have_attribute("data-reason", "COMPLETED", timeout=ms(2))
        await expect(row).to_contain_text(TITLE)
        await expect(row.locator("b")).to_have_count(0)


async def test_a_revoked_subscriber_is_taken_out_of_the_room_within_a_second(conferencing: Demo) -> None:
    alice, bob, carol, _ = await three_in_a_room(conferencing)
    await wait_receiving(alice, {"bob", "carol"})
    key = await api_key(conferencing.stack.core, "operator", "admin")
    async with httpx.AsyncClient(base_url=conferencing.stack.url, timeout=seconds()) as sapi:
        revoked = await sapi.post("/sapi/v1/subscribers/bob:revokeSessions", headers={"authorization": f"Bearer {key}"})
    assert revoked.status_code == 200, revoked.text
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    # The others see bob leave: his tile goes.
    for phone in (alice, carol):
        tile = phone.page.locator('[data-testid="conference-tile"][data-username="bob"]')
        await expect(tile).to_have_count(0, timeout=ms(2))
    assert loop.time() - revoked_at < 1 + seconds(0.5)  # within a second, and the test's own slack
    # bob's page is out of the room.
    await expect(bob.testid("conference-panel")).to_have_attribute("data-state", "ended", timeout=ms(2))


async def test_a_page_whose_janus_socket_drops_rejoins_the_room(conferencing: Demo) -> None:
    sockets: list[WebSocketRoute] = []

    def through(route: WebSocketRoute) -> None:
        # Passed on to Janus as it is, held so that the test can drop it.
        route.connect_to_server()
        sockets.append(route)

    alice, bob, carol, _ = await three_in_a_room(conferencing, bob_janus=through)
    await wait_receiving(carol, {"alice", "bob"})
    assert len(sockets) == 1
    # bob's Janus socket drops (a network change): his page rejoins the room.
    await sockets[0].close(code=1001, reason="network change")
    await expect(bob.testid("conference-panel")).to_have_attribute("data-state", "joined", timeout=ms(4))
    assert len(sockets) >= 2, "bob's page did not open a new Janus socket"
    await wait_receiving(bob, {"alice", "carol"})
    await wait_receiving(alice, {"bob", "carol"})


async def test_a_page_whose_wac_connection_is_down_past_the_grace_period_rejoins(conferencing: Demo) -> None:
    alice, bob, carol, _ = await three_in_a_room(conferencing)
    await wait_receiving(alice, {"bob", "carol"})

    # bob's network to wac goes away (Janus's socket stays: a network is
    # seldom so choosy, but it is wac's side that is tested here).
    await bob.record_states()
    await bob.go_offline()
    # Past the grace period wac counts him out: the others' grids lose him.
    for phone in (alice, carol):
        tile = phone.page.locator('[data-testid="conference-tile"][data-username="bob"]')
        await expect(tile).to_have_count(0, timeout=ms(GRACE + 2))

    # Back: his page hears it and joins again; media flows both ways.
    await bob.go_online()
    await bob.wait_reconnected()
    await expect(bob.testid("conference-panel")).to_have_attribute("data-state", "joined", timeout=ms(4))
    for phone in (alice, carol):
        tile = phone.page.locator('[data-testid="conference-tile"][data-username="bob"]')
        await expect(tile).to_have_count(1, timeout=ms(4))
    await wait_receiving(bob, {"alice", "carol"})
    await wait_receiving(alice, {"bob", "carol"})
