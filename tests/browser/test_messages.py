"""Chat in the demo softphone, in headless Chromium, through the real
front door: a conversation started from the contacts side, its unread
badge, the text shown as text (never HTML), read ticks, the typing
indicator, replies in the open thread, a message written while offline
sent once back online, a page away longer than the events are kept
catching up from the history, and a group chat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from playwright.async_api import expect

from tests.browser.support import Demo, messages, ms, write
from tests.support.core import add_subscriber

CAROL = "carol-secret"
TITLE = "Team <i>A</i>"
HTML = '<img src=x onerror="window.pwned=1"><b>bold?</b> & more'


async def test_a_chat_between_two_pages(demo: Demo) -> None:
    alice, bob = await demo.phone("alice"), await demo.phone("bob")
    await alice.page.evaluate("() => window.wacDemo.startChat('bob')")
    await write(alice, HTML)
    await expect(messages(alice).last).to_have_attribute("data-state", "sent", timeout=ms())

    # bob's list shows the new conversation with one unread message.
    conversation = bob.page.locator('[data-testid="chat-conversation"][data-peer="alice"]')
    await expect(conversation.get_by_test_id("chat-unread")).to_have_text("1", timeout=ms())
    await conversation.click()
    received = messages(bob).last
    await expect(received.get_by_test_id("chat-message-text")).to_have_text(HTML, timeout=ms())
    await expect(received.locator("img, b")).to_have_count(0)
    assert await bob.page.evaluate("window.pwned") is None
    await expect(conversation.get_by_test_id("chat-unread")).to_have_count(0)
    # Opened, hence read: alice's tick says so.
    await expect(messages(alice).last.get_by_test_id("chat-tick")).to_have_attribute("data-read", "true", timeout=ms())

    # bob types: alice's open thread says so, until his message comes.
    await bob.testid("chat-text").press_sequentially("got")
    await expect(alice.testid("chat-typing")).to_be_visible(timeout=ms())
    await expect(alice.testid("chat-typing")).to_contain_text("is typing")
    await expect(bob.testid("chat-typing")).to_be_hidden()  # his own typing is not shown to him
    await bob.testid("chat-text").press_sequentially(" it")
    await bob.testid("chat-send").click()
    await expect(messages(alice).last.get_by_test_id("chat-message-text")).to_have_text("got it", timeout=ms())
    await expect(messages(alice).last).to_have_attribute("data-sender", "bob")
    await expect(alice.testid("chat-typing")).to_be_hidden()


async def test_a_message_written_offline_is_sent_once_back_online(demo: Demo) -> None:
    alice, bob = await demo.phone("alice"), await demo.phone("bob")
    await alice.page.evaluate("() => window.wacDemo.startChat('bob')")
    await write(alice, "first")
    await expect(messages(alice).last).to_have_attribute("data-state", "sent", timeout=ms())
    await bob.page.locator('[data-testid="chat-conversation"][data-peer="alice"]').click(timeout=ms())
    await expect(messages(bob)).to_have_count(1, timeout=ms())

    await alice.record_states()
    await alice.go_offline()
    await write(alice, "written while offline")
    await expect(messages(alice).last).to_have_attribute("data-state", "sending")
    await alice.go_online()
    await alice.wait_reconnected()
    await expect(messages(alice).last).to_have_attribute("data-state", "sent", timeout=ms(2))
    await expect(messages(bob)).to_have_count(2, timeout=ms())
    await expect(messages(bob).last.get_by_test_id("chat-message-text")).to_have_text("written while offline")
    # Once: bob's history has it a single time.
    history = await bob.page.evaluate(
        """async () => {
          const [c] = (await window.wacDemo.wac.messages.conversations()).conversations;
          return (await window.wacDemo.wac.messages.history(c.conversationId)).messages.map((m) => m.text);
        }"""
    )
    assert history == ["written while offline", "first"]


async def test_a_page_away_longer_than_the_events_are_kept_catches_up(
    demo_with: Callable[[Mapping[str, str]], AbstractAsyncContextManager[Demo]],
) -> None:
    # Events kept 1 s: bob's page, away for 3 s, cannot resume them.
    async with demo_with({"WAC_EVENTS_RETENTION": "1"}) as demo:
        alice, bob = await demo.phone("alice"), await demo.phone("bob")
        await alice.page.evaluate("() => window.wacDemo.startChat('bob')")
        await write(alice, "before")
        conversation = bob.page.locator('[data-testid="chat-conversation"][data-peer="alice"]')
        await conversation.click(timeout=ms())
        await expect(messages(bob)).to_have_count(1, timeout=ms())
        await bob.page.evaluate("() => { window.resyncs = 0; wacDemo.wac.on('resync', () => window.resyncs++); }")

        await bob.record_states()
        await bob.go_offline()
        for text in ("while you were away", "and again"):
            await write(alice, text)
            await expect(messages(alice).last).to_have_attribute("data-state", "sent", timeout=ms())
        await asyncio.sleep(3)
        await bob.go_online()
        await bob.wait_reconnected()
        await expect(messages(bob)).to_have_count(3, timeout=ms())
        texts = await bob.page.locator('[data-testid="chat-message-text"]').all_text_contents()
        assert texts == ["before", "while you were away", "and again"]
        # From the history, not a replay: the SDK had to resync.
        assert await bob.page.evaluate("window.resyncs") == 1
        # Read on catching up: alice's ticks say so.
        await expect(messages(alice).last.get_by_test_id("chat-tick")).to_have_attribute(
            "data-read", "true", timeout=ms()
        )


async def test_a_group_chat_in_three_pages(demo: Demo) -> None:
    await add_subscriber(demo.stack.core, "carol", CAROL, display_name="Carol Danvers")
    alice, bob = await demo.phone("alice"), await demo.phone("bob")
    carol = await demo.phone("carol", login=False)
    await carol.login(CAROL)
    conversation_id = await alice.page.evaluate(
        """async (title) => {
          const group = await window.wacDemo.wac.messages.createGroup(title, ["bob", "carol"]);
          await window.wacDemo.openConversation(group.conversationId);
          return group.conversationId;
        }""",
        TITLE,
    )
    await expect(alice.testid("chat-thread-title")).to_have_text(TITLE)
    await expect(alice.testid("chat-thread-title").locator("i")).to_have_count(0)
    for phone in (bob, carol):
        # conversationChanged put the group in their lists: they open it.
        await phone.page.locator(f'[data-testid="chat-conversation"][data-conversation-id="{conversation_id}"]').click(
            timeout=ms()
        )
        await expect(phone.testid("chat-thread")).to_have_attribute("data-conversation-id", conversation_id)
    await write(alice, "hello team")
    for phone in (bob, carol):
        await expect(messages(phone).last.get_by_test_id("chat-message-text")).to_have_text("hello team", timeout=ms())
        await expect(messages(phone).last).to_have_attribute("data-sender", "alice")
    await write(bob, "hi all")
    for phone in (alice, carol):
        await expect(messages(phone).last.get_by_test_id("chat-message-text")).to_have_text("hi all", timeout=ms())
