"""Who may see whose presence, and who is to hear of a change.

The rule itself is :func:`core.presence.rules.may_see`: under "contacts" a
subject's own contacts say who may see it. This module answers the same
questions in bulk against where the facts live: the contacts that link
subscribers (through a :class:`LinkIndex`, which the contacts store
implements) and the subscribers online right now. The cost of a change is
proportional to its watchers: under "contacts" one indexed range of the
subject's own contacts (bounded by the size of an address book), under
"domain" the online set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from core.presence.rules import VisibilityPolicy, may_see


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
    ) -> None:
        self.policy = VisibilityPolicy(policy)
        self._links = links
        self._online = online

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
        else:
            watchers = await self._links.linked_by(subject)
        watchers.add(subject)
        return watchers
