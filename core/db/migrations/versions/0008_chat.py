"""Chat: conversations, conversation_members, messages, message_blocks

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("unique_key", sa.String(length=140), nullable=True),
        sa.Column("create_time", sa.Float(), nullable=False),
        sa.Column("update_time", sa.Float(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("unique_key", name=op.f("uq_conversations_unique_key")),
    )
    op.create_table(
        "conversation_members",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "username", name=op.f("pk_conversation_members")),
    )
    op.create_index("ix_conversation_members_username", "conversation_members", ["username"])
    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("create_time", sa.Float(), nullable=False),
        sa.Column("system", sa.Boolean(), nullable=False),
        sa.Column("requester", sa.String(length=80), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"], unique=True)
    op.create_index("ix_messages_requester_request_id", "messages", ["requester", "request_id"], unique=True)
    op.create_index("ix_messages_create_time", "messages", ["create_time"])
    op.create_table(
        "message_blocks",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("blocked", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("username", "blocked", name=op.f("pk_message_blocks")),
    )


def downgrade() -> None:
    op.drop_table("message_blocks")
    op.drop_index("ix_messages_create_time", table_name="messages")
    op.drop_index("ix_messages_requester_request_id", table_name="messages")
    op.drop_index("ix_messages_conversation_seq", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_conversation_members_username", table_name="conversation_members")
    op.drop_table("conversation_members")
    op.drop_table("conversations")
