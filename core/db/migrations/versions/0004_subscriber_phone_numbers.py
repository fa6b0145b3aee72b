"""A phone number has one holder, found by an index: subscriber_phone_numbers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 19:20:00
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    table = op.create_table(
        "subscriber_phone_numbers",
        sa.Column("phone_number", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["username"],
            ["subscribers.username"],
            name=op.f("fk_subscriber_phone_numbers_username_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("phone_number", name=op.f("pk_subscriber_phone_numbers")),
    )
    op.create_index(
        op.f("ix_subscriber_phone_numbers_username"), "subscriber_phone_numbers", ["username"], unique=False
    )
    # Until now two subscribers could list the same number. The earliest
    # created keeps it; it leaves the later ones' lists, so that what a
    # subscriber shows and what the index says never disagree.
    conn = op.get_bind()
    subscribers = sa.table(
        "subscribers", sa.column("username", sa.String), sa.column("phone_numbers", sa.Text), sa.column("create_time")
    )
    rows = conn.execute(
        sa.select(subscribers.c.username, subscribers.c.phone_numbers).order_by(
            subscribers.c.create_time, subscribers.c.username
        )
    ).all()
    holders: dict[str, str] = {}
    for username, numbers_json in rows:
        numbers = json.loads(numbers_json)
        kept = [n for n in numbers if n not in holders]
        for number in kept:
            holders[number] = username
        if kept != numbers:
            log.warning(
                "subscriber %s loses %s: held by an earlier subscriber",
                username,
                ", ".join(n for n in numbers if n not in kept),
            )
            conn.execute(
                subscribers.update().where(subscribers.c.username == username).values(phone_numbers=json.dumps(kept))
            )
    if holders:
        op.bulk_insert(table, [{"phone_number": n, "username": u} for n, u in holders.items()])


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriber_phone_numbers_username"), table_name="subscriber_phone_numbers")
    op.drop_table("subscriber_phone_numbers")
