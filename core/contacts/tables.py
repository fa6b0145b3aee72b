"""Contacts tables: each subscriber's personal address book."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, String, Table, Text

from core.db.metadata import metadata


def _binary(length: int) -> String:
    # Listing pages by (sort_name, contact_id) must compare strings the same
    # way on every backend; PostgreSQL's order depends on the database locale
    # unless the column asks for "C".
    return String(length).with_variant(String(length, collation="C"), "postgresql")


contacts = Table(
    "contacts",
    metadata,
    Column("contact_id", String(32), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("display_name", String(128), nullable=False),
    Column("sort_name", _binary(255), nullable=False),  # folded display name
    Column("phone_numbers", Text, nullable=False, default="[]"),  # JSON list of E.164
    Column("emails", Text, nullable=False, default="[]"),  # JSON list
    # The linked wac subscriber, "" for none. Under the "contacts" visibility
    # policy a link is the owner's consent: the linked subscriber may see the
    # owner's presence (never the other way: that would let anyone grant
    # themselves sight of anyone by adding them).
    Column("subscriber", String(64), nullable=False, default=""),
    Column("favorite", Boolean, nullable=False, default=False),
    Column("notes", Text, nullable=False, default=""),
    Column("create_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
)
# ListContacts: one owner's contacts in display-name order, a range scan.
Index("ix_contacts_owner_sort", contacts.c.owner, contacts.c.sort_name, contacts.c.contact_id)
# "May viewer see subject" is one probe (subscriber=viewer, owner=subject).
Index("ix_contacts_subscriber_owner", contacts.c.subscriber, contacts.c.owner)
# Who watches a subject (the subscribers its own contacts link), on every
# presence change: an index-only range.
Index("ix_contacts_owner_subscriber", contacts.c.owner, contacts.c.subscriber)
