"""Chat tables: conversations, their members, their messages, and who
blocks whom. Every core reads and writes these alone: any core of a
cluster answers for any conversation."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

from core.db.metadata import metadata

conversations = Table(
    "conversations",
    metadata,
    Column("conversation_id", String(32), primary_key=True),
    # DIRECT, GROUP or SYSTEM (rules.Kind values).
    Column("type", String(8), nullable=False),
    # A group's title and owner; NULL otherwise.
    Column("title", String(200), nullable=True),
    Column("owner", String(64), nullable=True),
    # What makes a one-to-one conversation (its two usernames, sorted) or a
    # subscriber's system conversation (its username) the only one: NULL
    # for a group.
    Column("unique_key", String(140), nullable=True, unique=True),
    Column("create_time", Float, nullable=False),
    # Its last activity: its last message, or its creation.
    Column("update_time", Float, nullable=False),
    # The seq of its last message (0: none yet); the next one takes one more.
    Column("last_seq", BigInteger, nullable=False),
)

conversation_members = Table(
    "conversation_members",
    metadata,
    Column("conversation_id", String(32), primary_key=True),
    Column("username", String(64), primary_key=True),
    # The order members joined in.
    Column("position", Integer, nullable=False),
    # The seq of the last message the member read (its own count as read).
    Column("read_seq", BigInteger, nullable=False),
)
# A subscriber's conversations.
Index("ix_conversation_members_username", conversation_members.c.username)

messages = Table(
    "messages",
    metadata,
    Column("message_id", String(32), primary_key=True),
    Column("conversation_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    # The sender's username; "" for a system message.
    Column("sender", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("create_time", Float, nullable=False),
    Column("system", Boolean, nullable=False),
    # Who sent it, for its idempotency: the username, or "operator:" and the
    # API key's name; with the client's request_id, unique.
    Column("requester", String(80), nullable=False),
    Column("request_id", String(64), nullable=False),
)
# A conversation's messages by seq (pages, catch-up, unread counts).
Index("ix_messages_conversation_seq", messages.c.conversation_id, messages.c.seq, unique=True)
# A retried send finds the message it made.
Index("ix_messages_requester_request_id", messages.c.requester, messages.c.request_id, unique=True)
# The retention purge: the oldest first.
Index("ix_messages_create_time", messages.c.create_time)

message_blocks = Table(
    "message_blocks",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("blocked", String(64), primary_key=True),
    Column("create_time", Float, nullable=False),
)
