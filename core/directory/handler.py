"""The directory handler: searching the shared directory, and keeping wac's
own subscribers in it (source "wac").

The entries, their keys and the search itself belong to
``core.directory.store.DirectoryStore``; this module adds the request
bounds and the mirror of the subscriber table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from core.checks import max_length, require
from core.directory.records import DirectoryRecord, StoredEntry
from core.directory.store import DirectoryStore
from core.paging import page_size

log = logging.getLogger("wac.contacts")

SOURCE = "wac"
MAX_QUERY = 128
_BACKFILL_PAGE = 1000


class Subscriber(Protocol):
    """What the mirror reads of a subscriber (identity's SubscriberRow)."""

    @property
    def username(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def phone_numbers(self) -> tuple[str, ...]: ...
    @property
    def email(self) -> str: ...
    @property
    def disabled(self) -> bool: ...


class SubscriberSource(Protocol):
    """Every subscriber, by username order (identity's store)."""

    async def list_subscribers(self, after: str, limit: int) -> Sequence[Subscriber]: ...


def subscriber_record(row: Subscriber) -> DirectoryRecord | None:
    """A subscriber's directory entry; None for a disabled subscriber, who
    is not to be found (nor called) until enabled again."""
    if row.disabled:
        return None
    return DirectoryRecord(
        entry_id=row.username,
        display_name=row.display_name or row.username,
        phone_numbers=tuple(row.phone_numbers),
        emails=(row.email,) if row.email else (),
        subscriber=row.username,
    )


class DirectoryHandler:
    def __init__(self, store: DirectoryStore, subscribers: SubscriberSource, *, default_region: str = "ES") -> None:
        self._store = store
        self._subscribers = subscribers
        self._region = default_region
        # The store wants one writer per source at a time.
        self._mirror_lock = asyncio.Lock()

    async def search(self, viewer: str, query: str, size: int, token: str) -> tuple[list[StoredEntry], str]:
        """One page of the entries ``viewer`` may find matching a prefix of
        a name, an e-mail address or a phone number in any common form; exact
        matches first. Another subscriber's imported contacts are not among
        them (``core.directory.sources``)."""
        query = query.strip()
        require("query", query)
        max_length("query", query, MAX_QUERY)
        limit = page_size(size, default=20, maximum=100)
        # The store checks the page token (INVALID_ARGUMENT naming page_token).
        return await self._store.search(query, limit, token, self._region, viewer=viewer)

    async def start(self) -> int:
        """Make the mirror match the subscriber table; how many entries that
        added, updated or removed.

        Run at every start, not only on an empty mirror: a subscriber
        written without this process's listener (an older ``wac admin``, a
        crash between the two writes, a restored backup) is mirrored from
        then on. Only the differences are written.
        """
        records: list[DirectoryRecord] = []
        after = ""
        while True:
            rows = await self._subscribers.list_subscribers(after, _BACKFILL_PAGE)
            records += [r for r in map(subscriber_record, rows) if r is not None]
            if len(rows) < _BACKFILL_PAGE:
                break
            after = rows[-1].username
        async with self._mirror_lock:
            counts = await self._store.replace_source(SOURCE, records)
        changed = counts.added + counts.updated + counts.removed
        if changed:
            log.info(
                "directory: mirror of subscribers reconciled (%d added, %d updated, %d removed)",
                counts.added,
                counts.updated,
                counts.removed,
            )
        return changed

    async def subscriber_changed(self, username: str, row: Subscriber | None) -> None:
        """Identity listener: keep the subscriber's entry as the subscriber is."""
        record = subscriber_record(row) if row is not None else None
        try:
            async with self._mirror_lock:
                if record is None:
                    await self._store.delete_entry(SOURCE, username)
                else:
                    await self._store.upsert_entry(SOURCE, record)
        except Exception:
            # The subscriber change itself stands; a stale entry is found
            # under its old name until the next change of that subscriber
            # or the next start of a core, which reconciles the mirror.
            log.exception("directory: mirroring subscriber %s failed", username)
