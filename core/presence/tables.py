"""Presence tables."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, String, Table, Text

from core.db.metadata import metadata

presence_devices = Table(
    "presence_devices",
    metadata,
    # One row per device (session) that ever came online or published. The
    # row outlives a disconnection so that a device reconnecting keeps the
    # status it published, and so that the subscriber's last-seen time
    # survives its last device going away.
    Column("session_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),  # a presence.rules.Status name
    Column("note", Text, nullable=False, default=""),
    Column("updated_at", Float, nullable=False),  # when status or note was published
    Column("connected", Boolean, nullable=False, default=False),
    Column("last_seen", Float, nullable=False),  # when it last connected or disconnected
)
