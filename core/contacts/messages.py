"""Contacts as wac.v1 messages."""

from __future__ import annotations

from core.contacts.store import ContactRow
from core.convert import timestamp
from wac.v1 import contacts_pb2, events_pb2


def contact_message(row: ContactRow) -> contacts_pb2.Contact:
    return contacts_pb2.Contact(
        contact_id=row.contact_id,
        display_name=row.display_name,
        phone_numbers=list(row.phone_numbers),
        emails=list(row.emails),
        subscriber=row.subscriber,
        favorite=row.favorite,
        notes=row.notes,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def contact_changed(row: ContactRow, *, deleted: bool = False) -> events_pb2.Event:
    """The event for the owner's devices; a deletion carries only the id."""
    contact = contacts_pb2.Contact(contact_id=row.contact_id) if deleted else contact_message(row)
    return events_pb2.Event(contact_changed=events_pb2.ContactChanged(contact=contact, deleted=deleted))
