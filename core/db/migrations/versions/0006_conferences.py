"""Conferences: conferences and conference_members

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conferences",
        sa.Column("conference_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("creator", sa.String(length=64), nullable=False),
        sa.Column("media", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("room", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.Float(), nullable=False),
        sa.Column("end_time", sa.Float(), nullable=True),
        sa.Column("ended_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("conference_id", name=op.f("pk_conferences")),
    )
    op.create_index("ix_conferences_state_create_time", "conferences", ["state", "create_time", "conference_id"])
    op.create_table(
        "conference_members",
        sa.Column("conference_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("feed_id", sa.BigInteger(), nullable=True),
        sa.Column("join_time", sa.Float(), nullable=True),
        sa.Column("room_token", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("conference_id", "username", name=op.f("pk_conference_members")),
    )
    op.create_index(
        "ix_conference_members_username_active",
        "conference_members",
        ["username", "active", "create_time", "conference_id"],
    )
    # Only the members in a room have a device: a partial index, which
    # SQLite and PostgreSQL both support, holds those alone.
    in_room = sa.text("session_id IS NOT NULL")
    op.create_index(
        "ix_conference_members_session_id",
        "conference_members",
        ["session_id"],
        sqlite_where=in_room,
        postgresql_where=in_room,
    )


def downgrade() -> None:
    op.drop_index("ix_conference_members_session_id", table_name="conference_members")
    op.drop_index("ix_conference_members_username_active", table_name="conference_members")
    op.drop_table("conference_members")
    op.drop_index("ix_conferences_state_create_time", table_name="conferences")
    op.drop_table("conferences")
