"""Google contacts as DirectoryService offers them to each subscriber: start
and finish linking an account, read and remove the link, and tell the
subscriber's devices when it changes or breaks.

OAuth2 is a ``Linker``, the adapter the composition root hands in
(``connectors.google``); the links are kept in ``link_store``; the imports
run on the ``SyncRunner``, one connector per linked subscriber, source
"google:<username>". This module sequences them and owns no protocol.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from core.checks import max_length, require
from core.directory.connector import Connector, GrantRevoked
from core.directory.link_store import LINKED, GoogleLink, GoogleLinkStore
from core.directory.messages import google_link_changed, google_link_deleted
from core.directory.records import SyncRunRecord
from core.directory.runner import AlreadyRunning, SyncRunner, UnknownConnector
from core.directory.sources import personal_source
from core.directory.store import DirectoryStore
from core.events.log import EventLog
from core.failures import NotFound

log = logging.getLogger("wac.contacts")

# Bounds on what a callback hands over; Google's are far shorter.
MAX_STATE = 128
MAX_CODE = 2048


def connector_name(username: str) -> str:
    """The connector, and directory source, of one subscriber's link."""
    return personal_source("google", username)


@dataclass(frozen=True, slots=True)
class Authorization:
    """A link under way: the consent page, its one-time state, and until
    when ``Linker.complete`` accepts that state."""

    url: str
    state: str
    expire_time: float


class Linker(Protocol):
    """Google's side of a link: OAuth2 consent, code exchange and revocation,
    and the connector that imports a linked subscriber's contacts. The
    adapter is ``connectors.google.GoogleLinker``."""

    async def authorize(self, username: str) -> Authorization:
        """Start a link for ``username``: the consent page with its state."""
        ...

    async def complete(self, username: str, state: str, code: str) -> GoogleLink:
        """Exchange the callback's code for a grant bound to ``username``, who
        must have started ``state``; the link as saved."""
        ...

    async def unlink(self, username: str) -> bool:
        """Revoke the grant, forget the link and remove the imported entries;
        whether there was a link."""
        ...

    def connector(self, username: str) -> Connector:
        """The connector importing ``username``'s contacts."""
        ...


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A subscriber's link and its latest import."""

    link: GoogleLink
    last_run: SyncRunRecord | None


class GoogleContacts:
    """The link flow of every subscriber; each call acts on one subscriber's link."""

    def __init__(
        self, linker: Linker, links: GoogleLinkStore, runner: SyncRunner, runs: DirectoryStore, events: EventLog
    ) -> None:
        self._linker = linker
        self._links = links
        self._runner = runner
        self._runs = runs
        self._events = events
        self._imports: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Give every working link its connector; how many there are. Broken
        links wait for their subscriber to link again."""
        usernames = await self._links.usernames(LINKED)
        for username in usernames:
            self._runner.add(self._linker.connector(username))
        return len(usernames)

    async def stop(self) -> None:
        for task in list(self._imports):
            task.cancel()
        await asyncio.gather(*self._imports, return_exceptions=True)

    async def authorize(self, username: str) -> Authorization:
        return await self._linker.authorize(username)

    async def complete(self, username: str, session_id: str, state: str, code: str) -> LinkStatus:
        """Exchange the callback's code for a grant bound to ``username``,
        then import the contacts in the background."""
        require("state", state)
        max_length("state", state, MAX_STATE)
        require("code", code)
        max_length("code", code, MAX_CODE)
        link = await self._linker.complete(username, state, code)
        name = connector_name(username)
        self._runner.add(self._linker.connector(username))
        task = asyncio.create_task(self._first_import(name), name=f"first import of {name}")
        self._imports.add(task)
        task.add_done_callback(self._imports.discard)
        status = LinkStatus(link, await self._runs.last_run(name))
        await self._events.publish([username], google_link_changed(status.link, status.last_run), session_id)
        return status

    async def get(self, username: str) -> LinkStatus:
        link = await self._links.get(username)
        if link is None:
            raise _not_linked()
        return LinkStatus(link, await self._runs.last_run(connector_name(username)))

    async def delete(self, username: str, session_id: str) -> None:
        """Unlink: revoke the grant at Google, remove the imported entries."""
        if not await self._unlink(username):
            raise _not_linked()
        await self._events.publish([username], google_link_deleted(username), session_id)

    async def connector_failed(self, connector: Connector, exc: Exception) -> None:
        """The runner's failure hook: a refused grant is told to its subscriber
        on every device, as their link changed to BROKEN."""
        if not isinstance(exc, GrantRevoked):
            return
        link = await self._links.get(exc.username)
        if link is None:
            return
        last_run = await self._runs.last_run(connector.name)
        await self._events.publish([exc.username], google_link_changed(link, last_run))
        log.info("told %s their Google link broke", exc.username)

    async def subscriber_changed(self, username: str, row: object | None) -> None:
        """Identity listener: a deleted subscriber's grant is revoked and their
        imported contacts go with them."""
        if row is not None:
            return
        try:
            await self._unlink(username)
        except Exception:
            log.exception("unlinking the Google account of deleted subscriber %s failed", username)

    async def _unlink(self, username: str) -> bool:
        if await self._links.get(username) is None:
            return False
        name = connector_name(username)
        self._runner.remove(name)
        # A run writing the entries now would bring them back after unlink.
        await self._runner.idle(name)
        return await self._linker.unlink(username)

    async def _first_import(self, name: str) -> None:
        try:
            await self._runner.run(name, full=True)
        except (AlreadyRunning, UnknownConnector):
            pass  # the schedule got there first, or the link went meanwhile
        except Exception:
            log.exception("first import of %s could not run", name)


def _not_linked() -> NotFound:
    return NotFound("you have not linked a Google account")
