"""The call history beyond the calls' own rows: entries another service
keeps (a conference is one), merged into ListCalls newest first.

Each source answers a page of its entries with the calls' own keyset (the
create time, then the id, both descending, strictly before the previous
page's last entry), so the newest ``limit`` of the sources' pages together
are the merged history's page: paging stays an index walk per source.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Protocol

from core.calls.machine import CallInfo, CallState


class HistorySource(Protocol):
    async def entries(
        self, *, party: str | None, state: CallState | None, before: tuple[float, str] | None, limit: int
    ) -> list[CallInfo]:
        """At most ``limit`` entries newest first: ``party``'s (None: every
        one), in ``state`` (None: any), before the ``before`` position."""
        ...


def merged(pages: Iterable[list[CallInfo]], limit: int) -> list[CallInfo]:
    """The newest ``limit`` entries of the pages, newest first."""
    return heapq.nlargest(limit, (e for page in pages for e in page), key=lambda e: (e.create_time, e.call_id))
