"""Presence values as wac.v1 messages, and back."""

from __future__ import annotations

from core import failures
from core.convert import timestamp
from core.presence.rules import Aggregate, Reason, Status
from wac.v1 import presence_pb2

_Status = presence_pb2.Presence.Status

_TO_WIRE = {status: _Status.Value(status.value) for status in Status}
_FROM_WIRE = {value: status for status, value in _TO_WIRE.items()}


def status_from_wire(field: str, value: int) -> Status:
    """The rules' Status for a wire value; INVALID_ARGUMENT when unset or unknown."""
    if value == _Status.STATUS_UNSPECIFIED:
        raise failures.Invalid(field, "is required")
    try:
        return _FROM_WIRE[value]
    except KeyError:
        known = ", ".join(s.value for s in Status)
        raise failures.Invalid(field, f"{value} is not a status; use one of {known}") from None


def presence_message(username: str, display_name: str, state: Aggregate) -> presence_pb2.Presence:
    message = presence_pb2.Presence(
        username=username,
        display_name=display_name,
        status=_TO_WIRE[state.status],
        note=state.note,
        # 0 is a device that never connected: never seen.
        last_seen_time=timestamp(state.last_seen) if state.last_seen else None,
    )
    if state.reason is Reason.IN_CALL:
        message.reason = presence_pb2.Presence.IN_CALL
    return message
