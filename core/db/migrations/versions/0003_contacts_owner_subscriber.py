"""Presence watchers are the subject's own contacts: index (owner, subscriber)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 19:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Under the "contacts" visibility a subject's watchers are the subscribers
    # its own contacts link: read on every presence change, so it must be an
    # index-only range like the reverse lookup it replaced.
    op.create_index("ix_contacts_owner_subscriber", "contacts", ["owner", "subscriber"])


def downgrade() -> None:
    op.drop_index("ix_contacts_owner_subscriber", table_name="contacts")
