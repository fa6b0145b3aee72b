"""The directory's values as wac.v1 messages: for the directory servicer,
and the Google link's events."""

from __future__ import annotations

from core.convert import duration, timestamp
from core.directory.link_store import BROKEN, LINKED, GoogleLink
from core.directory.records import RunState, StoredEntry, SyncRunRecord
from wac.v1 import directory_pb2, events_pb2

_RUN_STATES = {
    RunState.RUNNING: directory_pb2.SyncRun.RUNNING,
    RunState.SUCCEEDED: directory_pb2.SyncRun.SUCCEEDED,
    RunState.FAILED: directory_pb2.SyncRun.FAILED,
}

_LINK_STATES = {
    LINKED: directory_pb2.GoogleLink.LINKED,
    BROKEN: directory_pb2.GoogleLink.BROKEN,
}


def entry_message(entry: StoredEntry) -> directory_pb2.DirectoryEntry:
    record = entry.record
    return directory_pb2.DirectoryEntry(
        entry_id=record.entry_id,
        source=entry.source,
        display_name=record.display_name,
        phone_numbers=list(record.phone_numbers),
        emails=list(record.emails),
        department=record.department,
        subscriber=record.subscriber,
    )


def run_message(run: SyncRunRecord) -> directory_pb2.SyncRun:
    message = directory_pb2.SyncRun(
        connector=run.connector,
        state=_RUN_STATES[run.state],
        start_time=timestamp(run.start_time),
        added=run.added,
        updated=run.updated,
        removed=run.removed,
        skipped=run.skipped,
        error=run.error,
        full=run.full,
    )
    if run.duration is not None:
        message.duration.CopyFrom(duration(run.duration))
    return message


def connector_message(name: str, type_: str, last_run: SyncRunRecord | None) -> directory_pb2.Connector:
    message = directory_pb2.Connector(name=name, type=type_)
    if last_run is not None:
        message.last_run.CopyFrom(run_message(last_run))
    return message


def google_link_message(link: GoogleLink, last_run: SyncRunRecord | None) -> directory_pb2.GoogleLink:
    message = directory_pb2.GoogleLink(
        username=link.username,
        state=_LINK_STATES.get(link.state, directory_pb2.GoogleLink.STATE_UNSPECIFIED),
        reason=link.reason,
        create_time=timestamp(link.create_time),
        update_time=timestamp(link.update_time),
    )
    if last_run is not None:
        message.last_run.CopyFrom(run_message(last_run))
    return message


def google_link_changed(link: GoogleLink, last_run: SyncRunRecord | None) -> events_pb2.Event:
    """The event for the subscriber's devices: the link as it is now."""
    return events_pb2.Event(google_link_changed=events_pb2.GoogleLinkChanged(link=google_link_message(link, last_run)))


def google_link_deleted(username: str) -> events_pb2.Event:
    """The event for the subscriber's devices: the link is gone."""
    link = directory_pb2.GoogleLink(username=username)
    return events_pb2.Event(google_link_changed=events_pb2.GoogleLinkChanged(link=link, deleted=True))
