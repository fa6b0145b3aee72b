"""Conference history and idle expiry: end_reason, idle_since, first_join_time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conferences") as batch:
        batch.add_column(sa.Column("end_reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("idle_since", sa.Float(), nullable=True))
    # Conferences from before: an active one with nobody in its room is idle
    # from now on (the sweep gives it the whole timeout).
    op.execute(
        "UPDATE conferences SET idle_since = create_time WHERE state = 'ACTIVE' AND NOT EXISTS "
        "(SELECT 1 FROM conference_members m WHERE m.conference_id = conferences.conference_id "
        "AND m.session_id IS NOT NULL)"
    )
    op.execute(
        "UPDATE conferences SET end_reason = CASE WHEN ended_by = creator THEN 'CREATOR' ELSE 'OPERATOR' END "
        "WHERE state = 'ENDED'"
    )
    op.create_index("ix_conferences_create_time", "conferences", ["create_time", "conference_id"])
    with op.batch_alter_table("conference_members") as batch:
        batch.add_column(sa.Column("first_join_time", sa.Float(), nullable=True))
    op.execute("UPDATE conference_members SET first_join_time = join_time WHERE join_time IS NOT NULL")
    op.create_index(
        "ix_conference_members_username_create_time",
        "conference_members",
        ["username", "create_time", "conference_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_conference_members_username_create_time", table_name="conference_members")
    with op.batch_alter_table("conference_members") as batch:
        batch.drop_column("first_join_time")
    op.drop_index("ix_conferences_create_time", table_name="conferences")
    with op.batch_alter_table("conferences") as batch:
        batch.drop_column("idle_since")
        batch.drop_column("end_reason")
