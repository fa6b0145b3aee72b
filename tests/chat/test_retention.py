"""Nothing is lost, and nothing kept past its time: a device away longer
than the events are kept catches up with ListMessages; messages past
[messages] retention are purged."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.chat.support import Chat, open_chat
from tests.support.clock import FakeClock


async def test_a_device_away_past_the_event_retention_catches_up_from_the_history(tmp_path: Path) -> None:
    async with open_chat(tmp_path, {"WAC_EVENTS_RETENTION": "60"}, clock=FakeClock()) as chat:
        alice, bob = await chat.device("alice"), await chat.device("bob")
        first = await alice.send("m0", to="bob")
        (told,) = await bob.expect("message_received")
        last_seen = told.message.seq
        await bob.disconnect()
        for n in range(1, 4):
            await alice.send(f"m{n}", to="bob")
        await chat.advance(120)  # past the events' retention
        # The stream cannot resume from there; the history has every message.
        caught = await bob.history(first.conversation_id, after_seq=last_seen)
        assert [m.text for m in caught.messages] == ["m1", "m2", "m3"]


async def test_messages_past_the_retention_are_purged(tmp_path: Path) -> None:
    retention = 40.0  # the purge runs every quarter of it (at most an hour)
    async with open_chat(tmp_path, {"WAC_MESSAGES_RETENTION": str(retention)}, clock=FakeClock()) as chat:
        alice, bob = await chat.device("alice"), await chat.device("bob", connect=False)
        old = await alice.send("old", to="bob")
        await chat.advance(retention / 2)
        await alice.send("new", to="bob")
        await sweeps(chat, retention / 2 + retention / 4, retention / 4)
        assert await bob.texts(old.conversation_id) == ["new"]
        [conversation] = (await bob.conversations()).conversations
        assert (conversation.last_message.text, conversation.unread_count) == ("new", 1)
        await sweeps(chat, retention / 2 + retention / 4, retention / 4)
        assert await bob.texts(old.conversation_id) == []
        # The conversation stays, and goes on from its seq.
        again = await alice.send("again", to="bob")
        assert (again.conversation_id, again.seq) == (old.conversation_id, 3)


async def sweeps(chat: Chat, seconds: float, period: float) -> None:
    """Fake time moved on a period at a time, each purge given the real time
    its statements take before the next is due."""
    for _ in range(round(seconds / period)):
        await chat.advance(period)
        await asyncio.sleep(0.1)
