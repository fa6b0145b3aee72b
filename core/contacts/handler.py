"""The address-book handler: each subscriber's personal contacts.

Validation is in ``rules.py``, SQL in ``store.py``; this module sequences
them, tells the owner's other devices what changed, and tells listeners
(presence) when a contact starts or stops linking a subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any, Protocol

from core.contacts import rules
from core.contacts.messages import contact_changed
from core.contacts.store import ContactRow, ContactsStore
from core.directory.keys import fold
from core.events.log import EventLog
from core.failures import Exhausted, Invalid, NotFound
from core.paging import decode_token, encode_token, invalid_token, page_size

log = logging.getLogger("wac.contacts")

LinksListener = Callable[[str, Collection[str], Collection[str]], Awaitable[None]]
"""(owner, subscribers now linked, subscribers no longer linked)."""


class SubscriberLookup(Protocol):
    """Whether a username is a wac subscriber (identity's store)."""

    async def get_subscriber(self, username: str) -> object | None: ...


def _sort_name(display_name: str) -> str:
    return fold(display_name)[:255]


class ContactsHandler:
    """Contacts of every subscriber; each call acts on one owner's book."""

    def __init__(
        self,
        store: ContactsStore,
        events: EventLog,
        subscribers: SubscriberLookup,
        *,
        default_region: str = "ES",
        max_contacts: int = rules.MAX_CONTACTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``default_region`` reads national phone numbers (an ISO 3166
        code); ``max_contacts`` (>= 1) bounds each subscriber's book."""
        self._store = store
        self._events = events
        self._subscribers = subscribers
        self._region = default_region
        self.max_contacts = max_contacts
        self._clock = clock
        self._links_listeners: list[LinksListener] = []
        self._create_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def on_links_changed(self, listener: LinksListener) -> None:
        self._links_listeners.append(listener)

    # -- operations ---------------------------------------------------
    async def create(self, owner: str, session_id: str, given: Mapping[str, Any]) -> ContactRow:
        """Add a contact from raw field values (by name); ``session_id`` is
        the device asking, which is not told of its own change."""
        fields = rules.validate("contact", given, rules.EDITABLE, self._region)
        await self._check_link("contact.subscriber", fields["subscriber"], previous="")
        now = self._clock()
        row = ContactRow(
            contact_id=secrets.token_urlsafe(16),
            owner=owner,
            sort_name=_sort_name(fields["display_name"]),
            create_time=now,
            update_time=now,
            **fields,
        )
        lock = self._create_locks.setdefault(owner, asyncio.Lock())
        async with lock:
            created = await self._store.create(row, limit=self.max_contacts)
        if not created:
            raise Exhausted(f"your address book is full: at most {self.max_contacts} contacts are allowed")
        await self._changed(owner, session_id, None, row)
        return row

    async def get(self, owner: str, contact_id: str) -> ContactRow:
        rules.contact_id("contact_id", contact_id)
        row = await self._store.get(owner, contact_id)
        if row is None:
            raise NotFound(f"contact '{contact_id}' does not exist")
        return row

    async def update(
        self,
        owner: str,
        session_id: str,
        contact_id: str,
        given: Mapping[str, Any],
        mask: Collection[str],
        present: Collection[str],
    ) -> ContactRow:
        """Change the fields in ``mask``, or with an empty mask those in
        ``present`` (the fields the request set)."""
        rules.contact_id("contact.contact_id", contact_id)
        paths = rules.update_paths(mask, present)
        changes = rules.validate("contact", given, paths, self._region)
        old = await self.get(owner, contact_id)
        if not changes:
            return old
        if "subscriber" in changes:
            await self._check_link("contact.subscriber", changes["subscriber"], previous=old.subscriber)
        if "display_name" in changes:
            changes["sort_name"] = _sort_name(changes["display_name"])
        new = replace(old, **changes, update_time=self._clock())
        if not await self._store.update(new):
            raise NotFound(f"contact '{contact_id}' does not exist")
        await self._changed(owner, session_id, old, new)
        return new

    async def delete(self, owner: str, session_id: str, contact_id: str) -> None:
        rules.contact_id("contact_id", contact_id)
        row = await self._store.delete(owner, contact_id)
        if row is None:
            raise NotFound(f"contact '{contact_id}' does not exist")
        await self._changed(owner, session_id, row, None)

    async def list_page(self, owner: str, size: int, token: str) -> tuple[list[ContactRow], str]:
        """One page of the owner's contacts by display name, then id."""
        limit = page_size(size, default=100, maximum=1000)
        position = decode_token(token)
        after: tuple[str, str] | None = None
        if position is not None:
            if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
                raise invalid_token()
            after = (position[0], position[1])
        rows = await self._store.page(owner, after, limit + 1)
        if len(rows) <= limit:
            return rows, ""
        last = rows[limit - 1]
        return rows[:limit], encode_token([last.sort_name, last.contact_id])

    async def subscriber_changed(self, username: str, row: object | None) -> None:
        """Identity listener: links to a deleted subscriber are cleared, so a
        later subscriber of the same name is not linked by accident."""
        if row is not None:
            return
        for contact in await self._store.unlink(username, self._clock()):
            await self._events.publish([contact.owner], contact_changed(contact))
            await self._tell_links(contact.owner, (), (username,))

    # -- helpers ------------------------------------------------------
    async def _check_link(self, field: str, username: str, *, previous: str) -> None:
        # An unchanged link stays valid even if it could not be made today.
        if username and username != previous and await self._subscribers.get_subscriber(username) is None:
            raise Invalid(field, f"there is no wac subscriber '{username}'")

    async def _changed(self, owner: str, session_id: str, old: ContactRow | None, new: ContactRow | None) -> None:
        row = new or old
        assert row is not None
        await self._events.publish([owner], contact_changed(row, deleted=new is None), exclude_session=session_id)
        before = old.subscriber if old else ""
        after = new.subscriber if new else ""
        if before != after:
            await self._tell_links(owner, [after] if after else [], [before] if before else [])

    async def _tell_links(self, owner: str, added: Collection[str], removed: Collection[str]) -> None:
        for listener in self._links_listeners:
            try:
                await listener(owner, added, removed)
            except Exception:
                log.exception("links listener failed for %s", owner)
