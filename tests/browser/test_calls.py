"""Real calls between two browsers through the demo softphone: alice and bob
each in their own browser context, real RTCPeerConnections over loopback,
Chromium's fake camera and microphone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from playwright.async_api import expect

from tests.browser.support import ARTIFACTS, Demo, ms


async def test_call_answered_then_hung_up(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")

    await demo.call(alice, bob)
    for phone in (alice, bob):
        media = await phone.media()
        assert media["state"] == "connected"
        assert set(media["directions"]) == {"sendrecv"}, media
    await expect(bob.testid("call-peer")).to_have_text("Alice Liddell")

    # The screenshot: alice's demo during the video call, once bob's video plays.
    await alice.page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=remote-video]');"
        " return v.videoWidth > 0 && v.currentTime > 0.5; }",
        timeout=ms(),
        polling=100,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.page.screenshot(path=str(ARTIFACTS / "demo-video-call.png"))

    await alice.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    await bob.expect_ended("COMPLETED")
    [bob_end] = await bob.wait_ended()
    assert bob_end["reason"] == "COMPLETED" and bob_end["endedBy"] == "alice", bob_end
    [alice_end] = await alice.wait_ended()
    assert alice_end["reason"] == "COMPLETED" and alice_end["direction"] == "outgoing", alice_end
    # The history lists the call on both sides.
    for phone in (alice, bob):
        row = phone.testid("history-row").first
        await expect(row).to_have_attribute("data-reason", "COMPLETED", timeout=ms())


async def test_declined_call_dialled_by_number(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")

    # A number finds its subscriber through the directory: bob's browser rings.
    await alice.dial("+34 600 111 222", video=False)
    invite = await bob.ringing_from("alice")
    await expect(invite).to_contain_text("Alice Liddell is calling")
    await invite.get_by_test_id("reject").click()

    await alice.expect_ended("REJECTED")
    await expect(alice.testid("call-status")).to_contain_text("Declined by bob")
    await expect(bob.testid("incoming-call")).to_have_count(0)
    [bob_end] = await bob.wait_ended()
    assert bob_end["reason"] == "REJECTED" and bob_end["direction"] == "incoming", bob_end


async def test_cancelled_while_ringing(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")

    await alice.dial("Bob Marley")  # a name finds its subscriber through the directory
    await bob.ringing_from("alice")
    await alice.expect_state("ringing")
    await alice.testid("hangup").click()

    await alice.expect_ended("CANCELLED")
    await expect(bob.testid("incoming-call")).to_have_count(0, timeout=ms())
    [bob_end] = await bob.wait_ended()
    assert bob_end["reason"] == "CANCELLED" and bob_end["endedBy"] == "alice", bob_end


async def test_no_answer(demo_with: Callable[[Mapping[str, str]], AbstractAsyncContextManager[Demo]]) -> None:
    async with demo_with({"WAC_CALLS_RING_TIMEOUT": "1.5"}) as demo:
        alice = await demo.phone("alice")
        bob = await demo.phone("bob")

        await alice.dial("bob")
        await bob.ringing_from("alice")
        await alice.expect_ended("NO_ANSWER")
        await expect(alice.testid("call-status")).to_contain_text("No answer")
        await expect(bob.testid("incoming-call")).to_have_count(0, timeout=ms())
        [bob_end] = await bob.wait_ended()
        assert bob_end["reason"] == "NO_ANSWER", bob_end


async def test_hold_resume_and_mute(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")
    await demo.call(alice, bob)

    # Hold renegotiates: alice only sends, bob only receives.
    await alice.testid("hold").click()
    await alice.wait_media("m => m.directions.every((d) => d === 'sendonly')")
    await bob.wait_media("m => m.directions.every((d) => d === 'recvonly')")
    await expect(alice.testid("hold")).to_have_text("Resume", timeout=ms())
    await expect(bob.testid("call-status")).to_contain_text("alice put you on hold", timeout=ms())
    await bob.wait_bytes_grow()
    held = (await alice.media())["bytes"]
    await alice.page.wait_for_timeout(700)
    assert (await alice.media())["bytes"] - held < 2000, "alice still receives media on hold"

    await alice.testid("hold").click()
    for phone in (alice, bob):
        await phone.wait_media("m => m.directions.every((d) => d === 'sendrecv')")
    await expect(alice.testid("hold")).to_have_text("Hold", timeout=ms())
    await expect(bob.testid("call-status")).not_to_contain_text("on hold", timeout=ms())
    for phone in (alice, bob):
        await phone.wait_bytes_grow()

    # Mute disables the microphone's track; no renegotiation.
    await bob.testid("mute").click()
    await expect(bob.testid("mute")).to_have_text("Unmute")
    assert await bob.page.evaluate("window.wacDemo.call.isMuted('audio')")
    assert not await bob.page.evaluate("window.wacDemo.call.isMuted('video')")

    await bob.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    [alice_end] = await alice.wait_ended()
    assert alice_end["endedBy"] == "bob", alice_end


async def test_hold_from_the_callee_and_from_both_at_once(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")
    await demo.call(alice, bob)

    await bob.testid("hold").click()
    await bob.wait_media("m => m.directions.every((d) => d === 'sendonly')")
    await alice.wait_media("m => m.directions.every((d) => d === 'recvonly')")
    await bob.testid("hold").click()
    for phone in (alice, bob):
        await phone.wait_media("m => m.directions.every((d) => d === 'sendrecv')")

    # Both press Hold at once: the offers collide (glare). The server lets
    # the caller's win; bob's SDK answers it, then offers again.
    await asyncio.gather(alice.testid("hold").click(), bob.testid("hold").click())
    for phone in (alice, bob):
        await phone.wait_media("m => m.directions.every((d) => d === 'inactive')")
        await expect(phone.testid("hold")).to_have_text("Resume", timeout=ms())
    await asyncio.gather(alice.testid("hold").click(), bob.testid("hold").click())
    for phone in (alice, bob):
        await phone.wait_media("m => m.directions.every((d) => d === 'sendrecv')")
        await expect(phone.testid("hold")).to_have_text("Hold", timeout=ms())
        await phone.wait_bytes_grow()
        await expect(phone.testid("error")).to_be_hidden()
