"""The one read-cache of subscribers: what token verification, call set-up
and presence read of a subscriber on every request, served from memory.

Identity owns it and evicts an entry as soon as it changes the subscriber
(``IdentityHandler`` forgets it before telling the subscriber listeners);
the composition root hands it to calls and presence, which only read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from core.clock import Clock
from core.identity import rules
from core.identity.store import SubscriberRow

# The staleness bound, in seconds: how long a change made by another process
# (the admin CLI, another core on the same database) may go unseen here.
STALENESS = 1.0
# Beyond this many subscribers the least recently read are dropped.
MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class KnownSubscriber:
    """A subscriber as its readers need it, its permissions worked out once."""

    row: SubscriberRow
    permissions: frozenset[str]

    @property
    def display_name(self) -> str:
        """The name to show: the username when the record has none."""
        return self.row.display_name or self.row.username


class SubscriberSource(Protocol):
    """Where subscribers are read from (identity's store)."""

    async def get_subscriber(self, username: str) -> SubscriberRow | None: ...

    async def get_subscribers(self, usernames: Sequence[str]) -> list[SubscriberRow]: ...


class SubscriberCache:
    """Subscribers by username, read from the store at most once per
    ``staleness`` seconds each (a subscriber that does not exist too).

    Guarantees:

    - A change made through this process's identity handler (create,
      update, rename, disable, delete, a revocation learnt from the poll) is
      seen by the next read: the handler calls :meth:`forget` before it
      answers. A read that was already under way when the entry was
      forgotten is answered but not kept.
    - A change made by another process (the admin CLI, another core sharing
      the database) is seen within ``staleness`` seconds. That is the only
      bound: there is no cross-process invalidation. Disabling and deleting
      also revoke the sessions, which other cores learn from their revocation
      poll, usually sooner.
    - At most ``max_size`` subscribers are kept, the least recently read
      dropped first. Time is the injected clock's monotonic time.
    """

    def __init__(
        self,
        store: SubscriberSource,
        roles: Mapping[str, tuple[str, ...]],
        clock: Clock,
        *,
        staleness: float = STALENESS,
        max_size: int = MAX_CACHED,
    ) -> None:
        self._store = store
        self._roles = roles
        self._known: TTLCache[str, KnownSubscriber | None] = TTLCache(
            maxsize=max_size, ttl=staleness, timer=clock.monotonic
        )
        # Bumped by each forget(): a read begun before it must not store
        # what it read, which may predate the change.
        self._generation = 0

    async def get(self, username: str) -> KnownSubscriber | None:
        """The subscriber, or None when there is no such subscriber."""
        try:
            return self._known[username]
        except KeyError:
            pass
        generation = self._generation
        row = await self._store.get_subscriber(username)
        known = None if row is None else KnownSubscriber(row, rules.permissions_for(row.roles, self._roles))
        if generation == self._generation:
            self._known[username] = known
        return known

    async def get_many(self, usernames: Sequence[str]) -> dict[str, KnownSubscriber | None]:
        """Several subscribers by username (None for those that do not
        exist); those not cached are read in one query."""
        out: dict[str, KnownSubscriber | None] = {}
        missing: list[str] = []
        for username in usernames:
            try:
                out[username] = self._known[username]
            except KeyError:
                missing.append(username)
        if missing:
            generation = self._generation
            rows = {row.username: row for row in await self._store.get_subscribers(missing)}
            for username in missing:
                row = rows.get(username)
                known = None if row is None else KnownSubscriber(row, rules.permissions_for(row.roles, self._roles))
                if generation == self._generation:
                    self._known[username] = known
                out[username] = known
        return out

    async def exists(self, username: str) -> bool:
        """Whether there is a subscriber of that name (disabled or not)."""
        return await self.get(username) is not None

    async def display_name(self, username: str) -> str | None:
        """The subscriber's name to show, or None when there is no such subscriber."""
        known = await self.get(username)
        return None if known is None else known.display_name

    def forget(self, username: str) -> None:
        """The subscriber changed: the next read goes to the store."""
        self._generation += 1
        # KeyError: absent, or already expired (TTLCache drops it and still
        # says KeyError).
        with suppress(KeyError):
            del self._known[username]
