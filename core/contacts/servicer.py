"""ContactsService: translates the protobuf API to the address book.

The use cases live in ``handler.py``; this module reads the caller,
converts messages and nothing else.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from core.auth.principal import subscriber
from core.contacts.handler import ContactsHandler
from core.contacts.messages import contact_message
from core.contacts.rules import EDITABLE
from wac.v1 import contacts_pb2, contacts_pb2_grpc


def _fields(contact: contacts_pb2.Contact) -> dict[str, Any]:
    return {
        "display_name": contact.display_name,
        "phone_numbers": list(contact.phone_numbers),
        "emails": list(contact.emails),
        "subscriber": contact.subscriber,
        "favorite": contact.favorite,
        "notes": contact.notes,
    }


class ContactsServicer(contacts_pb2_grpc.ContactsServiceServicer):
    def __init__(
        self,
        book: ContactsHandler,
    ) -> None:
        self._book = book

    async def CreateContact(
        self, request: contacts_pb2.CreateContactRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.Contact:
        principal = subscriber()
        row = await self._book.create(principal.username, principal.session_id, _fields(request.contact))
        return contact_message(row)

    async def GetContact(
        self, request: contacts_pb2.GetContactRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.Contact:
        return contact_message(await self._book.get(subscriber().username, request.contact_id))

    async def ListContacts(
        self, request: contacts_pb2.ListContactsRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.ListContactsResponse:
        rows, token = await self._book.list_page(subscriber().username, request.page_size, request.page_token)
        return contacts_pb2.ListContactsResponse(contacts=[contact_message(r) for r in rows], next_page_token=token)

    async def UpdateContact(
        self, request: contacts_pb2.UpdateContactRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.Contact:
        principal = subscriber()
        contact = request.contact
        present = [f.name for f, _ in contact.ListFields() if f.name in EDITABLE]
        row = await self._book.update(
            principal.username,
            principal.session_id,
            contact.contact_id,
            _fields(contact),
            list(request.update_mask.paths),
            present,
        )
        return contact_message(row)

    async def DeleteContact(
        self, request: contacts_pb2.DeleteContactRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = subscriber()
        await self._book.delete(principal.username, principal.session_id, request.contact_id)
        return empty_pb2.Empty()
