"""Translation between the machine's values and wac.v1 protobuf messages.

The machine's enum member names are the proto enum value names, so the
translation is by name both ways.
"""

from __future__ import annotations

from core import failures
from core.calls import machine as m
from core.convert import duration, timestamp
from wac.v1 import calls_pb2, events_pb2

# Bounds on the candidate fields the machine does not check itself.
MAX_SDP_MID_BYTES = 64
MAX_UFRAG_BYTES = 256


_FAILURES: dict[m.ErrorCode, type[failures.Failure]] = {
    m.ErrorCode.FAILED_PRECONDITION: failures.FailedPrecondition,
    m.ErrorCode.PERMISSION_DENIED: failures.PermissionDenied,
    m.ErrorCode.RESOURCE_EXHAUSTED: failures.Exhausted,
}


def failure(exc: m.CallError) -> failures.Failure:
    """The domain failure for an input the machine refused (same status, message, field)."""
    if exc.code is m.ErrorCode.INVALID_ARGUMENT:
        if exc.field is None:
            return failures.Malformed(exc.message)
        # The machine's message already starts with the field, as Invalid's does.
        return failures.Invalid(exc.field, exc.message.removeprefix(f"{exc.field}: "))
    return _FAILURES[exc.code](exc.message)


def call_pb(call: m.CallInfo) -> calls_pb2.Call:
    """The Call message of ``call``: a message of its own, for the caller to keep or change."""
    message = calls_pb2.Call()
    message.CopyFrom(_call_message(call))
    return message


# A transition's answer and its events carry the same call (a set-up's
# CreateCall three times: the response, callInvited and callRinging): built
# once, then copied, which costs a fifth of building it. Equal CallInfos make
# equal messages, so a cached one is never stale; it is never handed out to
# be changed, only copied (call_pb, or a constructor taking it as a field).
# Looked up by call id and compared, not hashed: a CallInfo's hash goes
# through its enums' and Media's Python-level hashes, as dear as a copy.
_MESSAGES: dict[str, tuple[m.CallInfo, calls_pb2.Call]] = {}
_MAX_MESSAGES = 256


def _call_message(call: m.CallInfo) -> calls_pb2.Call:
    cached = _MESSAGES.get(call.call_id)
    if cached is not None and cached[0] == call:
        return cached[1]
    message = _built(call)
    if len(_MESSAGES) >= _MAX_MESSAGES:
        del _MESSAGES[next(iter(_MESSAGES))]  # the oldest call
    _MESSAGES[call.call_id] = (call, message)
    return message


def _built(call: m.CallInfo) -> calls_pb2.Call:
    message = calls_pb2.Call(
        call_id=call.call_id,
        caller=call.caller,
        callee=call.callee,
        state=call.state.value,
        media=calls_pb2.Media(audio=call.media.audio, video=call.media.video),
        caller_device=call.caller_device,
        callee_device=call.callee_device or "",
        offered_devices=call.offered_devices,
        create_time=timestamp(call.create_time),
        answer_time=timestamp(call.answer_time),
        end_time=timestamp(call.end_time),
        end_reason=call.end_reason.value if call.end_reason else None,
        ended_by=call.ended_by or "",
        via=call.via.value,
        sip_call_id=call.sip_call_id,
    )
    if call.duration is not None:
        message.duration.CopyFrom(duration(call.duration))
    if call.conference is not None:
        message.conference.title = call.conference.title
        message.conference.invitees.extend(call.conference.invitees)
        message.conference.attendees.extend(call.conference.attendees)
    return message


def description_pb(description: m.SessionDescription) -> calls_pb2.SessionDescription:
    return calls_pb2.SessionDescription(type=description.type.value, sdp=description.sdp)


def candidate_pb(candidate: m.IceCandidate) -> calls_pb2.IceCandidate:
    return calls_pb2.IceCandidate(
        candidate=candidate.candidate,
        sdp_mid=candidate.sdp_mid,
        sdp_m_line_index=candidate.sdp_m_line_index,
        username_fragment=candidate.username_fragment,
    )


def event_pb(event: m.CallEvent, *, caller_display_name: str = "") -> events_pb2.Event:
    """The wac.v1 Event for a machine event; the log stamps seq and time."""
    match event:
        case m.CallInvited(call, offer):
            return events_pb2.Event(
                call_invited=events_pb2.CallInvited(
                    call=_call_message(call),
                    offer=description_pb(offer),
                    caller_display_name=caller_display_name or call.caller,
                )
            )
        case m.CallRinging(call):
            return events_pb2.Event(call_ringing=events_pb2.CallRinging(call=_call_message(call)))
        case m.CallAnswered(call, answer):
            return events_pb2.Event(
                call_answered=events_pb2.CallAnswered(call=_call_message(call), answer=description_pb(answer))
            )
        case m.CallUpdated(call, description):
            return events_pb2.Event(
                call_updated=events_pb2.CallUpdated(call=_call_message(call), description=description_pb(description))
            )
        case m.IceCandidateReceived(call_id, candidate, end_of_candidates):
            received = events_pb2.IceCandidateReceived(call_id=call_id, end_of_candidates=end_of_candidates)
            if candidate is not None:
                received.candidate.CopyFrom(candidate_pb(candidate))
            return events_pb2.Event(ice_candidate=received)
        case m.CallEnded(call, reason):
            return events_pb2.Event(call_ended=events_pb2.CallEnded(call=_call_message(call), reason=reason.value))
    raise TypeError(f"not a call event: {event!r}")  # pragma: no cover


def description(field: str, message: calls_pb2.SessionDescription) -> m.SessionDescription:
    """A request's description; INVALID_ARGUMENT naming ``field.type`` when unset."""
    if message.type == calls_pb2.SessionDescription.TYPE_UNSPECIFIED:
        if not message.sdp:
            raise failures.Invalid(field, "is required")
        raise failures.Invalid(f"{field}.type", "is required: OFFER or ANSWER")
    return m.SessionDescription(m.DescriptionType(calls_pb2.SessionDescription.Type.Name(message.type)), message.sdp)


def media(message: calls_pb2.CreateCallRequest) -> m.Media:
    """The media asked for; audio only when the request leaves it unset."""
    if not message.HasField("media"):
        return m.Media(audio=True, video=False)
    return m.Media(audio=message.media.audio, video=message.media.video)


def candidate(message: calls_pb2.SendIceCandidateRequest) -> m.IceCandidate | None:
    if not message.HasField("candidate"):
        return None
    c = message.candidate
    if len(c.sdp_mid.encode()) > MAX_SDP_MID_BYTES:
        raise failures.Invalid("candidate.sdp_mid", f"is longer than {MAX_SDP_MID_BYTES} bytes")
    if len(c.username_fragment.encode()) > MAX_UFRAG_BYTES:
        raise failures.Invalid("candidate.username_fragment", f"is longer than {MAX_UFRAG_BYTES} bytes")
    if c.sdp_m_line_index < 0:
        raise failures.Invalid("candidate.sdp_m_line_index", "must not be negative")
    return m.IceCandidate(c.candidate, c.sdp_mid, c.sdp_m_line_index, c.username_fragment)


def state(value: int) -> m.CallState | None:
    """A ListCalls state filter; None for STATE_UNSPECIFIED (every state)."""
    if value == calls_pb2.Call.STATE_UNSPECIFIED:
        return None
    try:
        return m.CallState(calls_pb2.Call.State.Name(value))
    except ValueError:
        raise failures.Invalid("state", f"unknown state {value}") from None
