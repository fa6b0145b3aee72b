"""Identity tables."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from core.db.metadata import metadata

subscribers = Table(
    "subscribers",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(128), nullable=False, default=""),
    Column("phone_numbers", Text, nullable=False, default="[]"),  # JSON list of E.164
    Column("email", String(254), nullable=False, default=""),
    Column("roles", Text, nullable=False, default="[]"),  # JSON list
    Column("disabled", Boolean, nullable=False, default=False),
    Column("password_hash", String(255), nullable=False),
    Column("create_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
)

# Who holds each phone number, written with the subscriber's row: the
# gateway asks it for every call from the trunk, so it is a primary-key
# lookup, and a number has one holder (the one whose browsers ring).
subscriber_phone_numbers = Table(
    "subscriber_phone_numbers",
    metadata,
    Column("phone_number", String(16), primary_key=True),  # E.164: "+" and at most 15 digits
    Column(
        "username",
        String(64),
        ForeignKey("subscribers.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("device_name", String(128), nullable=False, default=""),
    Column("create_time", Float, nullable=False),
    # The refresh token is "<session>.<generation>.<secret>"; only the hash of
    # the current generation's secret is kept. An older generation presented
    # again means the token was copied: the session is revoked.
    Column("refresh_generation", Integer, nullable=False, default=0),
    Column("refresh_hash", String(64), nullable=False),
    Column("refresh_expire_time", Float, nullable=False),
    # The previous generation's hash and when it was replaced: a client whose
    # refresh answer was lost in a dropped connection may present the old
    # token once more within a short grace (identity.refresh_reuse_grace).
    Column("previous_refresh_hash", String(64), nullable=True),
    Column("rotate_time", Float, nullable=True),
    Column("revoke_time", Float, nullable=True),
    Column("revoke_reason", String(32), nullable=True),
)
Index("ix_sessions_revoke_time", sessions.c.revoke_time)
# Each core's poll learns the sessions other cores created since its last poll.
Index("ix_sessions_create_time", sessions.c.create_time)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    # Several rows may share a name (a key revoked, or rotated and in its
    # grace period, beside its successor); one only is live (see below).
    Column("name", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),  # JSON list
    Column("create_time", Float, nullable=False),
    # When the key stops working: now for a revocation, the end of the grace
    # period for a rotated key (in the future until then).
    Column("revoke_time", Float, nullable=True),
    # Written in the background at most once a minute per key.
    Column("last_used_time", Float, nullable=True),
)
Index("ix_api_keys_name", api_keys.c.name)
Index("ix_api_keys_revoke_time", api_keys.c.revoke_time)
# At most one key per name without an end: the one `wac admin apikey` shows as live.
# PostgreSQL's predicate is the same; core/db/tables.py adds it for Alembic.
Index("uq_api_keys_live_name", api_keys.c.name, unique=True, sqlite_where=api_keys.c.revoke_time.is_(None))

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(32), primary_key=True),
    Column("private_jwk", Text, nullable=False),
    Column("create_time", Float, nullable=False),
)

login_failures = Table(
    "login_failures",
    metadata,
    # "user:<username>" or "addr:<client address>"
    Column("key", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_time", Float, nullable=False),
    Column("last_time", Float, nullable=False),
    Column("locked_until", Float, nullable=False, default=0.0),
)
