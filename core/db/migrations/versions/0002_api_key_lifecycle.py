"""API keys can be revoked, rotated and show their last use; sessions are
polled by creation time

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A rotated key keeps its name beside its successor during the grace
    # period, so the name is unique among live keys only (a partial index,
    # which SQLite and PostgreSQL both support).
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("uq_api_keys_name", type_="unique")
        batch.add_column(sa.Column("last_used_time", sa.Float(), nullable=True))
    op.create_index("ix_api_keys_name", "api_keys", ["name"])
    op.create_index("ix_api_keys_revoke_time", "api_keys", ["revoke_time"])
    live = sa.text("revoke_time IS NULL")
    op.create_index(
        "uq_api_keys_live_name", "api_keys", ["name"], unique=True, sqlite_where=live, postgresql_where=live
    )
    op.create_index("ix_sessions_create_time", "sessions", ["create_time"])


def downgrade() -> None:
    op.drop_index("ix_sessions_create_time", table_name="sessions")
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    op.drop_index("ix_api_keys_revoke_time", table_name="api_keys")
    op.drop_index("ix_api_keys_name", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_time")
        batch.create_unique_constraint("uq_api_keys_name", ["name"])
