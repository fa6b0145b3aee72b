"""DirectoryService: translates the protobuf API to the directory's search,
its connectors' runner and the Google link flow.

The use cases live in ``handler.py``, ``runner.py`` and ``google.py``; this
module reads the caller, converts messages and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
from google.protobuf import empty_pb2

from core.auth.principal import subscriber
from core.checks import require
from core.convert import timestamp
from core.directory.google import GoogleContacts
from core.directory.handler import DirectoryHandler
from core.directory.messages import connector_message, entry_message, google_link_message, run_message
from core.directory.records import SyncRunRecord
from core.failures import PermissionDenied, Unimplemented
from wac.v1 import directory_pb2, directory_pb2_grpc


class NamedConnector(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


class ConnectorRunner(Protocol):
    """The connectors' runner (``SyncRunner``)."""

    def connectors(self) -> Sequence[NamedConnector]: ...

    async def run(self, name: str, full: bool = False) -> SyncRunRecord: ...


class LastRuns(Protocol):
    async def last_run(self, connector: str) -> SyncRunRecord | None: ...


class DirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(
        self,
        directory: DirectoryHandler,
        *,
        connectors: ConnectorRunner | None = None,
        runs: LastRuns | None = None,
        google: GoogleContacts | None = None,
    ) -> None:
        self._directory = directory
        self._connectors = connectors
        self._runs = runs
        self._google = google

    async def SearchDirectory(
        self, request: directory_pb2.SearchDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.SearchDirectoryResponse:
        principal = subscriber()
        if not principal.has("contacts.directory"):
            raise PermissionDenied("searching the directory needs the contacts.directory permission")
        entries, token = await self._directory.search(
            principal.username, request.query, request.page_size, request.page_token
        )
        return directory_pb2.SearchDirectoryResponse(entries=[entry_message(e) for e in entries], next_page_token=token)

    async def ListConnectors(
        self, request: directory_pb2.ListConnectorsRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListConnectorsResponse:
        if self._connectors is None or self._runs is None:
            raise _no_connectors()
        return directory_pb2.ListConnectorsResponse(
            connectors=[
                connector_message(c.name, c.type, await self._runs.last_run(c.name))
                for c in self._connectors.connectors()
            ]
        )

    async def SyncConnector(
        self, request: directory_pb2.SyncConnectorRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.SyncRun:
        if self._connectors is None:
            raise _no_connectors()
        require("name", request.name)
        return run_message(await self._connectors.run(request.name, request.full))

    async def CreateGoogleLinkAuthorization(
        self, request: directory_pb2.CreateGoogleLinkAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GoogleLinkAuthorization:
        authorization = await self._google_contacts().authorize(subscriber().username)
        return directory_pb2.GoogleLinkAuthorization(
            authorization_uri=authorization.url,
            state=authorization.state,
            expire_time=timestamp(authorization.expire_time),
        )

    async def CompleteGoogleLink(
        self, request: directory_pb2.CompleteGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GoogleLink:
        principal = subscriber()
        status = await self._google_contacts().complete(
            principal.username, principal.session_id, request.state, request.code
        )
        return google_link_message(status.link, status.last_run)

    async def GetGoogleLink(
        self, request: directory_pb2.GetGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GoogleLink:
        status = await self._google_contacts().get(subscriber().username)
        return google_link_message(status.link, status.last_run)

    async def DeleteGoogleLink(
        self, request: directory_pb2.DeleteGoogleLinkRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = subscriber()
        await self._google_contacts().delete(principal.username, principal.session_id)
        return empty_pb2.Empty()

    def _google_contacts(self) -> GoogleContacts:
        if self._google is None:
            raise Unimplemented(
                'Google contacts are not enabled in this core: configure a [connectors.NAME] section of type "google"'
            )
        return self._google


def _no_connectors() -> Unimplemented:
    return Unimplemented("connectors are not enabled in this core")
