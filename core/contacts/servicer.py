"""ContactsService: translates the protobuf API to the address book and the
directory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc
from google.protobuf import empty_pb2

from core import errors
from core.auth.principal import subscriber
from core.checks import require
from core.contacts.directory import Directory
from core.contacts.google import GoogleContacts
from core.contacts.messages import contact_message, google_link_message
from core.contacts.rules import EDITABLE
from core.contacts.service import AddressBook
from core.convert import timestamp
from core.directory.messages import connector_message, entry_message, run_message
from core.directory.records import SyncRunRecord
from wac.v1 import contacts_pb2, contacts_pb2_grpc


class NamedConnector(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


class ConnectorRunner(Protocol):
    """The connectors' runner (``connectors.runner.SyncRunner``)."""

    def connectors(self) -> Sequence[NamedConnector]: ...

    async def run(self, name: str, full: bool = False) -> SyncRunRecord: ...


class LastRuns(Protocol):
    async def last_run(self, connector: str) -> SyncRunRecord | None: ...


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
        book: AddressBook,
        directory: Directory,
        *,
        connectors: ConnectorRunner | None = None,
        runs: LastRuns | None = None,
        google: GoogleContacts | None = None,
    ) -> None:
        self._book = book
        self._directory = directory
        self._connectors = connectors
        self._runs = runs
        self._google = google

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

    async def SearchDirectory(
        self, request: contacts_pb2.SearchDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.SearchDirectoryResponse:
        principal = subscriber()
        if not principal.has("contacts.directory"):
            raise errors.permission_denied("searching the directory needs the contacts.directory permission")
        entries, token = await self._directory.search(
            principal.username, request.query, request.page_size, request.page_token
        )
        return contacts_pb2.SearchDirectoryResponse(entries=[entry_message(e) for e in entries], next_page_token=token)

    async def ListConnectors(
        self, request: contacts_pb2.ListConnectorsRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.ListConnectorsResponse:
        if self._connectors is None or self._runs is None:
            raise _no_connectors()
        return contacts_pb2.ListConnectorsResponse(
            connectors=[
                connector_message(c.name, c.type, await self._runs.last_run(c.name))
                for c in self._connectors.connectors()
            ]
        )

    async def SyncConnector(
        self, request: contacts_pb2.SyncConnectorRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.SyncRun:
        if self._connectors is None:
            raise _no_connectors()
        require("name", request.name)
        return run_message(await self._connectors.run(request.name, request.full))

    async def CreateGoogleLinkAuthorization(
        self, request: contacts_pb2.CreateGoogleLinkAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.GoogleLinkAuthorization:
        authorization = await self._google_contacts().authorize(subscriber().username)
        return contacts_pb2.GoogleLinkAuthorization(
            authorization_uri=authorization.url,
            state=authorization.state,
            expire_time=timestamp(authorization.expire_time),
        )

    async def CompleteGoogleLink(
        self, request: contacts_pb2.CompleteGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.GoogleLink:
        principal = subscriber()
        status = await self._google_contacts().complete(
            principal.username, principal.session_id, request.state, request.code
        )
        return google_link_message(status.link, status.last_run)

    async def GetGoogleLink(
        self, request: contacts_pb2.GetGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> contacts_pb2.GoogleLink:
        status = await self._google_contacts().get(subscriber().username)
        return google_link_message(status.link, status.last_run)

    async def DeleteGoogleLink(
        self, request: contacts_pb2.DeleteGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = subscriber()
        await self._google_contacts().delete(principal.username, principal.session_id)
        return empty_pb2.Empty()

    def _google_contacts(self) -> GoogleContacts:
        if self._google is None:
            raise errors.ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                'Google contacts are not enabled in this core: configure a [connectors.NAME] section of type "google"',
            )
        return self._google


def _no_connectors() -> errors.ApiError:
    return errors.ApiError(grpc.StatusCode.UNIMPLEMENTED, "connectors are not enabled in this core")
