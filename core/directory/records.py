"""The values the directory stores and reports, free of SQL and of gRPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    """One person as a source describes it; ``entry_id`` is unique in the source."""

    entry_id: str
    display_name: str
    phone_numbers: tuple[str, ...]  # E.164
    emails: tuple[str, ...]
    department: str = ""
    subscriber: str = ""


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
