"""Translation between chat's rules' values and wac.v1 messages.

The rules' Kind values are the proto Conversation.Type names.
"""

from __future__ import annotations

from core.chat.rules import Conversation, Message, View
from core.convert import timestamp
from wac.v1 import events_pb2, messages_pb2

_Type = messages_pb2.Conversation.Type


def message_pb(message: Message, reader: str | None = None) -> messages_pb2.Message:
    """``message`` as ``reader`` sees it: its request_id is the sender's alone."""
    return messages_pb2.Message(
        message_id=message.message_id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        sender=message.sender,
        text=message.text,
        create_time=timestamp(message.create_time),
        request_id=message.request_id if reader is None or reader == message.requester else "",
        system=message.system,
    )


def conversation_pb(conversation: Conversation) -> messages_pb2.Conversation:
    """What every member shares of a conversation (events carry this)."""
    return messages_pb2.Conversation(
        conversation_id=conversation.conversation_id,
        type=_Type.Value(conversation.kind.value),
        title=conversation.title,
        owner=conversation.owner,
        members=conversation.members,
        create_time=timestamp(conversation.create_time),
        update_time=timestamp(conversation.update_time),
    )


def view_pb(view: View, reader: str) -> messages_pb2.Conversation:
    """The conversation as ``reader`` sees it: its peer, unread count, read seq, last message."""
    message = conversation_pb(view.conversation)
    message.peer = view.conversation.peer(reader)
    message.unread_count = view.unread
    message.read_seq = view.read_seq
    if view.last_message is not None:
        message.last_message.CopyFrom(message_pb(view.last_message, reader))
    return message


# -- events: the log stamps seq and time ---------------------------------
def received(message: Message, conversation: Conversation) -> events_pb2.Event:
    return events_pb2.Event(
        message_received=events_pb2.MessageReceived(
            message=message_pb(message), conversation=conversation_pb(conversation)
        )
    )


def read(conversation_id: str, username: str, message: Message) -> events_pb2.Event:
    return events_pb2.Event(
        message_read=events_pb2.MessageRead(
            conversation_id=conversation_id, username=username, message_id=message.message_id, seq=message.seq
        )
    )


def deleted(message: Message) -> events_pb2.Event:
    return events_pb2.Event(
        message_deleted=events_pb2.MessageDeleted(
            conversation_id=message.conversation_id, message_id=message.message_id, seq=message.seq
        )
    )


def changed(conversation: Conversation, *, added: tuple[str, ...], removed: tuple[str, ...]) -> events_pb2.Event:
    return events_pb2.Event(
        conversation_changed=events_pb2.ConversationChanged(
            conversation=conversation_pb(conversation), added=added, removed=removed
        )
    )


def typing(conversation_id: str, username: str, typing: bool, expire_time: float) -> events_pb2.Event:
    return events_pb2.Event(
        typing=events_pb2.Typing(
            conversation_id=conversation_id, username=username, typing=typing, expire_time=timestamp(expire_time)
        )
    )
