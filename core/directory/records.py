"""The values the directory stores and reports, free of SQL and of gRPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

# The width of an entry's id, display name and department columns.
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    """One person as a source describes it; ``entry_id`` is unique in the source."""

    entry_id: str
    display_name: str
    phone_numbers: tuple[str, ...]  # E.164
    emails: tuple[str, ...]
    department: str = ""
    subscriber: str = ""


def storable_text(text: str, limit: int | None = MAX_TEXT) -> str:
    """``text`` as a column holds it on every backend: without NUL characters
    (PostgreSQL refuses them) and cut to ``limit`` characters (PostgreSQL
    refuses longer values where SQLite kept them, so one odd LDAP or Google
    entry failed the whole sync on PostgreSQL only)."""
    return text.replace("\x00", "")[:limit]


def storable(record: DirectoryRecord) -> DirectoryRecord:
    """``record`` as the directory stores it, the same on SQLite and PostgreSQL.
    An id is cut like a name: ids that long are not seen in practice, and
    deletes and lookups cut theirs alike, so a cut id still matches. Phone
    numbers and e-mails are JSON in unbounded columns; the subscriber is a
    username, validated where it is made, and is never cut into another."""
    return replace(
        record,
        entry_id=storable_text(record.entry_id),
        display_name=storable_text(record.display_name),
        phone_numbers=tuple(storable_text(p, None) for p in record.phone_numbers),
        emails=tuple(storable_text(e, None) for e in record.emails),
        department=storable_text(record.department),
        subscriber=storable_text(record.subscriber, None),
    )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A record as the directory holds it, with where it came from."""

    source: str
    record: DirectoryRecord
    updated_at: float


@dataclass(frozen=True, slots=True)
class Counts:
    """What one write did to a source's entries. Unchanged entries count nowhere."""

    added: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A connector's next cursor, committed with the entries it describes so
    that a crash can never leave the cursor ahead of the directory."""

    connector: str
    cursor: dict[str, Any] | None
    full: bool


class RunState(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class SyncRunRecord:
    """One run of a connector, as recorded."""

    run_id: int
    connector: str
    state: RunState
    full: bool
    start_time: float
    end_time: float | None
    added: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0
    error: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """Where a connector's next run starts, and when it last read everything."""

    cursor: dict[str, Any] | None = None
    last_full_time: float | None = None
