"""Calls through the SIP gateway share the call history: calls.via, calls.sip_call_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every call until now went through the WAPI: the default says so.
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("via", sa.String(length=8), server_default=sa.text("'WAPI'"), nullable=False))
        batch.add_column(sa.Column("sip_call_id", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("sip_call_id")
        batch.drop_column("via")
