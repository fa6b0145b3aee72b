"""The directory's values as wac.v1 messages, for the contacts servicer."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from core.directory.records import RunState, StoredEntry, SyncRunRecord
from wac.v1 import contacts_pb2

_RUN_STATES = {
    RunState.RUNNING: contacts_pb2.SyncRun.RUNNING,
    RunState.SUCCEEDED: contacts_pb2.SyncRun.SUCCEEDED,
    RunState.FAILED: contacts_pb2.SyncRun.FAILED,
}


def entry_message(entry: StoredEntry) -> contacts_pb2.DirectoryEntry:
    record = entry.record
    return contacts_pb2.DirectoryEntry(
        entry_id=record.entry_id,
        source=entry.source,
        display_name=record.display_name,
        phone_numbers=list(record.phone_numbers),
        emails=list(record.emails),
        department=record.department,
        subscriber=record.subscriber,
    )


def run_message(run: SyncRunRecord) -> contacts_pb2.SyncRun:
    start = Timestamp()
    start.FromNanoseconds(int(run.start_time * 1e9))
    message = contacts_pb2.SyncRun(
        connector=run.connector,
        state=_RUN_STATES[run.state],
        start_time=start,
        added=run.added,
        updated=run.updated,
        removed=run.removed,
        skipped=run.skipped,
        error=run.error,
        full=run.full,
    )
    if run.duration is not None:
        duration = Duration()
        duration.FromNanoseconds(int(run.duration * 1e9))
        message.duration.CopyFrom(duration)
    return message


def connector_message(name: str, type_: str, last_run: SyncRunRecord | None) -> contacts_pb2.Connector:
    message = contacts_pb2.Connector(name=name, type=type_)
    if last_run is not None:
        message.last_run.CopyFrom(run_message(last_run))
    return message
