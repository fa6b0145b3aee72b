"""Contacts and Google links as wac.v1 messages."""

from __future__ import annotations

from connectors.google_links import BROKEN, LINKED, GoogleLink
from core.contacts.store import ContactRow
from core.convert import timestamp
from core.directory.messages import run_message
from core.directory.records import SyncRunRecord
from wac.v1 import contacts_pb2, directory_pb2, events_pb2

_LINK_STATES = {
    LINKED: directory_pb2.GoogleLink.LINKED,
    BROKEN: directory_pb2.GoogleLink.BROKEN,
}


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


def google_link_message(link: GoogleLink, last_run: SyncRunRecord | None) -> directory_pb2.GoogleLink:
    message = directory_pb2.GoogleLink(
        username=link.username,
        state=_LINK_STATES.get(link.state, directory_pb2.GoogleLink.STATE_UNSPECIFIED),
        reason=link.reason,
        create_time=timestamp(link.create_time),
        update_time=timestamp(link.update_time),
    )
    if last_run is not None:
        message.last_run.CopyFrom(run_message(last_run))
    return message


def google_link_changed(link: GoogleLink, last_run: SyncRunRecord | None) -> events_pb2.Event:
    """The event for the subscriber's devices: the link as it is now."""
    return events_pb2.Event(google_link_changed=events_pb2.GoogleLinkChanged(link=google_link_message(link, last_run)))


def google_link_deleted(username: str) -> events_pb2.Event:
    """The event for the subscriber's devices: the link is gone."""
    link = directory_pb2.GoogleLink(username=username)
    return events_pb2.Event(google_link_changed=events_pb2.GoogleLinkChanged(link=link, deleted=True))
