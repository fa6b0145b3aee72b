"""The connector interface the core owns: what an outside system the
directory imports from must offer (fetch what changed since a cursor, or
everything), and the failures of a fetch that the runner tells apart.

The adapters (``connectors/``: LDAP, Google contacts) implement it; the
core never imports them, the composition root (``core/server.py``) hands
them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from core.directory.records import DirectoryRecord

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often a connector runs, and how often a run reads everything.

    ``full_every`` None means only when the connector asks (a Google sync
    token expired) or has no cursor; 0 means every run is full.
    """

    interval: float = 900.0
    full_every: float | None = DAY


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetch found.

    A full result lists every entry the source has (``records``); whatever
    the directory holds beyond that is removed. An incremental one lists
    added or changed entries (``records``) and removed ids (``deleted_ids``).
    ``cursor`` is where the next incremental fetch starts.
    """

    full: bool
    records: tuple[DirectoryRecord, ...]
    deleted_ids: tuple[str, ...] = ()
    skipped: int = 0
    cursor: dict[str, Any] | None = None


class Connector(Protocol):
    """An outside system the directory imports from.

    ``fetch`` must not change anything itself: the runner writes its result
    in one transaction, so a fetch that raises leaves the directory as it was.
    It may return a full result when asked for changes (its cursor expired).
    Failures the run should record are raised as ``FetchError`` (below).
    """

    @property
    def name(self) -> str:
        """The connector's name: its configuration section, or "google:<user>"."""
        ...

    @property
    def type(self) -> str:
        """ "ldap", "google", ..."""
        ...

    @property
    def source(self) -> str:
        """The directory source its entries go to: "ldap:<name>", "google:<user>"."""
        ...

    @property
    def schedule(self) -> Schedule: ...

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult: ...


class FetchError(Exception):
    """A fetch failed. The message is safe to record and show: it never
    holds a password or a token."""


class PermanentFetchError(FetchError):
    """A fetch failed in a way retrying will not mend; the schedule stops
    running the connector until it is set up again."""


class GrantRevoked(PermanentFetchError):
    """The subscriber's Google grant is gone (revoked, expired or the
    password changed): the link is broken until they link again."""

    def __init__(self, username: str, detail: str = "") -> None:
        message = f"the Google grant of {username} was revoked"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.username = username
