"""The typing indicator: an event to the other members, with how long to
show it; never stored; refused to strangers, not told to blockers."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.chat.support import Chat

NOT_MEMBER = "not a member of this conversation"


async def test_typing_reaches_the_other_members_only_and_is_never_stored(chat: Chat) -> None:
    alice, laptop = await chat.device("alice"), await chat.device("alice", "laptop")
    bob, carol = await chat.device("bob"), await chat.device("carol")
    group = await alice.group("Team", "bob", "carol")
    for device in (laptop, bob, carol):
        await device.expect("conversation_changed")
    before = await bob.conversation(group.conversation_id)

    await alice.typing(group.conversation_id)
    for device in (bob, carol):
        event = await device.next()
        told = event.typing
        assert (told.conversation_id, told.username, told.typing) == (group.conversation_id, "alice", True)
        # Shown for 6 s after the event at most, on wac's own clock.
        assert told.expire_time.ToMilliseconds() - event.time.ToMilliseconds() == 6000
    await alice.typing(group.conversation_id, False)
    for device in (bob, carol):
        (told,) = await device.expect("typing")
        assert (told.username, told.typing) == ("alice", False)
    # Her own devices are not told of her typing.
    await laptop.quiet()
    await alice.quiet()

    # Nothing of it is stored: no message, no activity, nothing unread.
    after = await bob.conversation(group.conversation_id)
    assert (after.update_time, after.unread_count, after.HasField("last_message")) == (before.update_time, 0, False)
    assert await bob.texts(group.conversation_id) == []


async def test_typing_is_refused_to_strangers_and_not_told_to_blockers(chat: Chat) -> None:
    alice, bob, mallory = await chat.device("alice"), await chat.device("bob"), await chat.device("carol")
    direct = await alice.send("hi", to="bob")
    await bob.expect("message_received")
    for conversation_id in (direct.conversation_id, "unknown-id"):
        await fails(grpc.StatusCode.PERMISSION_DENIED, mallory.typing(conversation_id), NOT_MEMBER)
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.typing(""), "conversation_id")

    await bob.block("alice")
    await alice.typing(direct.conversation_id)  # answered alike: she learns nothing
    await bob.quiet()
    await bob.unblock("alice")
    await alice.typing(direct.conversation_id)
    (told,) = await bob.expect("typing")
    assert told.username == "alice"

    # The operator's system conversation is read only: no typing in it.
    operator = await chat.operator("messages.write")
    system = await operator.system("bob", "maintenance tonight")
    await bob.expect("message_received")
    await fails(grpc.StatusCode.FAILED_PRECONDITION, bob.typing(system.conversation_id), "read only")
