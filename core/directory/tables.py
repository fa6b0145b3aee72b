"""Directory tables: entries, their search keys, connector runs and state,
and the Google links that feed per-subscriber connectors."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from core.db.metadata import metadata
from core.directory.keys import PREFIX_LENGTH
from core.directory.records import MAX_TEXT


def _binary(length: int) -> String:
    # Prefix search is a range scan (key >= q AND key < successor(q)); that is
    # only a prefix when strings compare by code point. SQLite's default
    # collation does; PostgreSQL's depends on the database locale, so the
    # column asks for "C" there. The queries stay the same on both.
    return String(length).with_variant(String(length, collation="C"), "postgresql")


directory_entries = Table(
    "directory_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(160), nullable=False),  # "wac", "ldap:<name>", "google:<user>"
    Column("entry_id", String(MAX_TEXT), nullable=False),
    Column("display_name", String(MAX_TEXT), nullable=False),
    Column("sort_name", _binary(255), nullable=False),  # folded display name, for ordering
    Column("phone_numbers", Text, nullable=False, default="[]"),  # JSON list of E.164
    Column("emails", Text, nullable=False, default="[]"),  # JSON list
    Column("department", String(MAX_TEXT), nullable=False, default=""),
    Column("subscriber", String(64), nullable=False, default=""),
    # A digest of the fields above: a sync compares it to tell an unchanged
    # entry from an updated one without loading every row's columns.
    Column("digest", String(32), nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("source", "entry_id"),
)
# Display-name order, for reading a page of a broad phone prefix's matches.
Index("ix_directory_entries_sort_name", directory_entries.c.sort_name, directory_entries.c.id)

directory_keys = Table(
    "directory_keys",
    metadata,
    Column(
        "entry_row_id",
        Integer,
        ForeignKey("directory_entries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", _binary(255), primary_key=True),
    Column("kind", String(8), nullable=False),  # name, word, email, phone
    # The entry's sort_name again: the matches of one key then come out of
    # the index below in display-name order, a page without a sort.
    Column("sort_name", _binary(255), nullable=False),
    # On SQLite the rows live in the primary key's B-tree, one tree fewer to write.
    sqlite_with_rowid=False,
)
# The search index: every lookup is an equality or a range on key.
Index("ix_directory_keys_key", directory_keys.c.key, directory_keys.c.sort_name, directory_keys.c.entry_row_id)

# The first 1 to keys.PREFIX_LENGTH characters of every key of an entry, once
# each: a query that short (or the start of a longer one) reads its matches
# in display-name order from the index, however many there are.
directory_key_prefixes = Table(
    "directory_key_prefixes",
    metadata,
    Column(
        "entry_row_id",
        Integer,
        ForeignKey("directory_entries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("prefix", _binary(PREFIX_LENGTH), primary_key=True),
    Column("sort_name", _binary(255), nullable=False),
    sqlite_with_rowid=False,
)
Index(
    "ix_directory_key_prefixes_prefix",
    directory_key_prefixes.c.prefix,
    directory_key_prefixes.c.sort_name,
    directory_key_prefixes.c.entry_row_id,
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("connector", String(160), nullable=False),
    Column("state", String(16), nullable=False),  # RUNNING, SUCCEEDED, FAILED
    Column("full", Boolean, nullable=False),
    Column("start_time", Float, nullable=False),
    Column("end_time", Float, nullable=True),
    Column("added", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("removed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
)
Index("ix_sync_runs_connector_id", sync_runs.c.connector, sync_runs.c.id)

connector_state = Table(
    "connector_state",
    metadata,
    Column("connector", String(160), primary_key=True),
    # Where the next incremental run starts: a JSON object only the
    # connector understands (an LDAP timestamp, a Google sync token).
    Column("cursor", Text, nullable=True),
    Column("last_full_time", Float, nullable=True),
)

google_links = Table(
    "google_links",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("token", Text, nullable=False),  # AES-GCM sealed token JSON, see core.cipher
    Column("state", String(16), nullable=False),  # linked, broken
    Column("reason", Text, nullable=False, default=""),  # why a link broke
    Column("create_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
)

google_link_requests = Table(
    "google_link_requests",
    metadata,
    # One row per authorization under way: the callback may reach any node,
    # and a state is good for one exchange only.
    Column("state", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("code_verifier", Text, nullable=False),  # sealed like the tokens
    Column("expire_time", Float, nullable=False),
)
