"""Who may see whose presence, and who is to hear of a change.

The rule itself is :func:`core.presence.rules.may_see`: under "contacts" a
subject's own contacts say who may see it. This module answers the same
questions in bulk against where the facts live: the contacts that link
subscribers (through a :class:`LinkIndex`, which the contacts store
implements) and the subscribers online right now. The cost of a change is
proportional to its watchers: under "contacts" one indexed range of the
subject's own contacts (bounded by the size of an address book), under
"domain" the online set.

On an embedded core every change of links is told to this core
(``forget``), so a subject's watchers are remembered between its changes:
a call set-up changes each party's presence twice, and each change would
otherwise read the same rows again. In a cluster another core may change
them: read every time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from cachetools import LRUCache

from core.presence.rules import VisibilityPolicy, may_see

# Subjects whose watchers an embedded core remembers (each a set bounded by
# an address book).
WATCHERS_CACHED = 10_000


class LinkIndex(Protocol):
    """Which subscribers' contacts link which subscribers."""

    async def linked_by(self, owner: str) -> set[str]:
        """The subscribers that ``owner``'s contacts link."""

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        """Those of ``owners`` with a contact linking ``subject``."""


class Visibility:
    """The ``presence.visibility`` policy, applied.

    ``online`` returns the subscribers with a device online (in a cluster,
    on any core); under "domain" they are the watchers of every change.
    """

    def __init__(
        self,
        policy: VisibilityPolicy | str,
        links: LinkIndex,
        online: Callable[[], Awaitable[Collection[str]]],
        *,
        remember: bool = False,
    ) -> None:
        """``remember``: every change of links reaches ``forget`` (one core)."""
        self.policy = VisibilityPolicy(policy)
        self._links = links
        self._online = online
        self._watchers: LRUCache[str, frozenset[str]] | None = LRUCache(WATCHERS_CACHED) if remember else None

    def forget(self, owner: str) -> None:
        """``owner``'s contacts changed (or it is gone): its watchers too."""
        if self._watchers is not None:
            self._watchers.pop(owner, None)

    async def may_see(self, viewer: str, subject: str) -> bool:
        """Whether the subscriber ``viewer`` may see ``subject``'s presence."""
        return subject in await self.visible_among(viewer, [subject])

    async def visible_among(self, viewer: str, subjects: Collection[str]) -> set[str]:
        """Those of ``subjects`` whose presence ``viewer`` may see."""
        consenting: Collection[str] = ()
        if self.policy is VisibilityPolicy.CONTACTS:
            others = [s for s in subjects if s != viewer]
            consenting = await self._links.owners_among(viewer, others) if others else set()
        # Of each subject's contacts only the link to the viewer matters here.
        return {s for s in subjects if may_see(viewer, s, self.policy, (viewer,) if s in consenting else ())}

    async def watchers_of(self, subject: str) -> set[str]:
        """The subscribers to tell when ``subject``'s presence changes
        (including the subject, whose other devices show it too)."""
        if self.policy is VisibilityPolicy.DOMAIN:
            watchers = set(await self._online())
            watchers.add(subject)
            return watchers
        known = None if self._watchers is None else self._watchers.get(subject)
        if known is None:
            known = frozenset(await self._links.linked_by(subject) | {subject})
            if self._watchers is not None:
                self._watchers[subject] = known
        return set(known)
