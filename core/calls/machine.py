"""The call state machine: the signalling rules of one call, without I/O.

A :class:`CallMachine` holds one call. Each input (create, answer, reject,
hangup, ICE candidate, renegotiation, a fired timer, a lost device) is a
method that takes ``now`` and returns a list of **effects** for the servicer
to carry out: :class:`Deliver` an event to some devices, :class:`StartTimer`,
:class:`CancelTimer`. The call's new state is read with :meth:`CallMachine.info`.
Nothing here does I/O, reads the clock, or knows gRPC or protobuf: the
servicer translates. An input the rules refuse raises :class:`CallError`
carrying a gRPC code name and a precise message, and changes nothing.

Times are wall-clock seconds since the epoch (``time.time()``), never a
monotonic clock: timer deadlines are persisted with the call and must keep
their meaning after a restart.

Devices are session ids. The device acting on a call learns the outcome from
its RPC's response; events go to the *other* devices only.

Checks run in a fixed order: who may act (PERMISSION_DENIED), then the
arguments (INVALID_ARGUMENT, with the field named), then the call's state
(FAILED_PRECONDITION), then bounds (RESOURCE_EXHAUSTED).

A machine is not thread-safe: feed one call's inputs one at a time.

Rules
-----

**Create.** A ``tel:``, ``sip:`` or ``sips:`` callee ends the call at once
with UNAVAILABLE ("PSTN/SIP routing is not configured"); a gateway will route
them later. A callee with no device online ends it at once with UNAVAILABLE.
A callee already in a call ends it at once with BUSY when busy-on-busy is
configured; otherwise the call rings as usual (call waiting). Otherwise the
call is RINGING: every online device of the callee gets CallInvited with the
offer, the caller's device gets CallRinging, and the ring timer starts. A call
that ends at once was offered to no device, and still gets CallEnded on the
caller's device, so a client can treat the event stream as the single source
of truth. The caller's own device is never offered the call. A subscriber
cannot call itself (INVALID_ARGUMENT). The offer must be a plausible SDP
offer and the media must include audio or video.

**Bounds on creation** (against call bombing: thousands of ringing calls
with large offers at one callee). A caller with ``max_calls_per_caller``
live calls placed (ringing or active) is refused another, whatever its
callee; a call that would ring at a callee with ``max_ringing_per_callee``
calls ringing already is refused, so the callee's devices get at most that
many invitations at once. Both are RESOURCE_EXHAUSTED, and the counts are
the servicer's input, like ``callee_busy``. A call that ends at once rings
nobody and is not refused for the callee's bound.

**Answer.** Only a device the call was offered to, and that still rings, may
answer. The first answer wins: the call becomes ACTIVE, the caller's device
gets CallAnswered, every other still-ringing device gets CallEnded with
ANSWERED_ELSEWHERE, and the ring timer is cancelled. A later answer fails with
FAILED_PRECONDITION "call already answered"; an answer after the end with
"call has ended".

**Reject.** A BUSY rejection from any ringing device ends the call at once
with BUSY: the caller and every other ringing device get CallEnded(BUSY). A
decline stops that device ringing; once no device rings and every offered
device declined, the call ends REJECTED and the caller gets
CallEnded(REJECTED).

**Hangup.** Before the answer, the caller's hangup ends the call CANCELLED
(the ringing devices get CallEnded(CANCELLED)); a ringing callee device's
hangup is a decline of that device. Once active, a hangup by the caller's
device or the answering device ends it COMPLETED (the other party's device
gets CallEnded(COMPLETED)); another device of the callee cannot hang up an
answered call (FAILED_PRECONDITION). An operator (no device) ends it with
OPERATOR for every device still in the call, and ``ended_by`` is
"operator". A hangup of an ended call fails with FAILED_PRECONDITION.

**ICE candidates.** The caller's candidates go to every ringing device before
the answer and to the answering device after it. A callee device's candidates
go to the caller's device: from any ringing device before the answer, only
from the answering device after it; candidates of a device that declined,
was lost or lost the race are dropped silently (no effect, no error), since
that device's peer connection is being torn down anyway. Each call relays at
most ``max_ice_candidates`` messages (end-of-candidates markers included,
since the bound limits relay work); past it RESOURCE_EXHAUSTED. A message is
either a candidate or an end-of-candidates marker, never both.

**Renegotiation.** Only an ACTIVE call, and only its two devices (the
caller's and the answering one). An OFFER goes to the other party as
CallUpdated and leaves an offer outstanding from that side; a side may
replace its own outstanding offer with a newer one. An ANSWER is valid only
when the *other* side has an offer outstanding; it goes to that side as
CallUpdated and closes the exchange. Glare (both sides offer at once) is
settled by role, whatever the order: **the caller's offer wins**. The
callee's offer while the caller's is outstanding fails with
FAILED_PRECONDITION "renegotiation glare: the caller's offer wins; answer it
and retry". The caller's offer while the callee's is outstanding replaces it:
the callee gets the caller's offer and must roll its own back and answer; the
callee's offer is void, so the caller cannot answer it any more. This is
WebRTC's "perfect negotiation" with the caller as the impolite peer.

**Ring timeout.** NO_ANSWER for the caller and every ringing device,
``ended_by`` "wac". A timer that fires early (clocks drift) is re-armed for
the stored deadline; one that fires for a call no longer ringing does nothing.

**Lost devices** (a device's connection stayed down past the grace period;
never raises, idempotent). A ringing callee device stops ringing; when no
device rings any more the call ends as it would have at the ring timeout,
NO_ANSWER, unless every offered device declined (then REJECTED). The
caller's device lost while ringing ends the call FAILED for the ringing
devices: the proto's FAILED means a lost connection, and ``ended_by`` "wac"
tells it apart from a cancel. Either party's device lost while active ends
the call FAILED for the other party, ``ended_by`` "wac". Devices outside the
call, or no longer in it, are ignored.

**Two calls at once.** Calls A→B and B→A are independent machines; the
busy-on-busy check at creation is the only link, and it is the servicer's
input.

**Persistence.** :meth:`CallMachine.snapshot` gives a JSON-ready dict and
:meth:`CallMachine.restore` rebuilds the machine; :meth:`CallMachine.pending_timers`
gives the timers to re-create from the stored deadlines after a restart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "DEFAULT_MAX_CALLS_PER_CALLER",
    "DEFAULT_MAX_ICE_CANDIDATES",
    "DEFAULT_MAX_RINGING_PER_CALLEE",
    "DEFAULT_MAX_SDP_BYTES",
    "DEFAULT_RING_TIMEOUT",
    "ENDED_BY_OPERATOR",
    "ENDED_BY_WAC",
    "MAX_CANDIDATE_BYTES",
    "CallAnswered",
    "CallEnded",
    "CallError",
    "CallEvent",
    "CallInfo",
    "CallInvited",
    "CallMachine",
    "CallRinging",
    "CallState",
    "CallUpdated",
    "CancelTimer",
    "Deliver",
    "DescriptionType",
    "DeviceState",
    "Effect",
    "EndReason",
    "ErrorCode",
    "IceCandidate",
    "IceCandidateReceived",
    "Media",
    "SessionDescription",
    "Side",
    "StartTimer",
    "TimerKind",
    "check_sdp",
    "is_uri_callee",
]

DEFAULT_RING_TIMEOUT: Final = 60.0
DEFAULT_MAX_ICE_CANDIDATES: Final = 200
DEFAULT_MAX_SDP_BYTES: Final = 32 * 1024
DEFAULT_MAX_CALLS_PER_CALLER: Final = 4
DEFAULT_MAX_RINGING_PER_CALLEE: Final = 8
MAX_CANDIDATE_BYTES: Final = 1024
ENDED_BY_WAC: Final = "wac"
ENDED_BY_OPERATOR: Final = "operator"
SNAPSHOT_VERSION: Final = 1

_URI_SCHEMES: Final = ("tel:", "sip:", "sips:")


# --- Enumerations: member names match the wac.v1 enum value names. ---------


class CallState(enum.Enum):
    """The state of a call (``wac.v1.Call.State``)."""

    RINGING = "RINGING"
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class EndReason(enum.Enum):
    """Why a call ended, for the call or for one device (``wac.v1.Call.EndReason``)."""

    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    BUSY = "BUSY"
    CANCELLED = "CANCELLED"
    NO_ANSWER = "NO_ANSWER"
    ANSWERED_ELSEWHERE = "ANSWERED_ELSEWHERE"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"
    OPERATOR = "OPERATOR"


class Via(enum.Enum):
    """The signalling path of a call (``wac.v1.Call.Via``): this machine's
    over the WAPI, or SIP through the gateway, which wac only observes; a
    conference is an entry of the history alone (``core/calls/history.py``)."""

    WAPI = "WAPI"
    SIP = "SIP"
    CONFERENCE = "CONFERENCE"


class DeviceState(enum.Enum):
    """Where one offered callee device stands."""

    RINGING = "RINGING"
    REJECTED = "REJECTED"  # declined by the user
    ANSWERED = "ANSWERED"
    LOST = "LOST"  # disconnected past the grace period while ringing
    ENDED = "ENDED"  # stopped ringing: the call ended or was answered elsewhere


class DescriptionType(enum.Enum):
    """An SDP description's role (``wac.v1.SessionDescription.Type``)."""

    OFFER = "OFFER"
    ANSWER = "ANSWER"


class Side(enum.Enum):
    """A party of a call."""

    CALLER = "CALLER"
    CALLEE = "CALLEE"

    @property
    def other(self) -> Side:
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


class TimerKind(enum.Enum):
    """The timers a call may have; one of each kind at most."""

    RING = "RING"


class ErrorCode(enum.Enum):
    """The gRPC status codes the rules raise; ``grpc.StatusCode[code.value]``."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


class CallError(Exception):
    """An input the rules refuse. The machine is left unchanged.

    ``field`` names the request field at fault for INVALID_ARGUMENT, and the
    message then starts with it, as ``core.failures.Invalid``'s does.
    """

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"CallError({self.code.value}, {self.message!r})"


def _invalid(field: str, message: str) -> CallError:
    return CallError(ErrorCode.INVALID_ARGUMENT, f"{field}: {message}", field=field)


def _precondition(message: str) -> CallError:
    return CallError(ErrorCode.FAILED_PRECONDITION, message)


def _denied(message: str) -> CallError:
    return CallError(ErrorCode.PERMISSION_DENIED, message)


def _exhausted(message: str) -> CallError:
    return CallError(ErrorCode.RESOURCE_EXHAUSTED, message)


# --- Values. -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Media:
    """The media a call carries."""

    audio: bool = True
    video: bool = False


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """An SDP offer or answer."""

    type: DescriptionType
    sdp: str


@dataclass(frozen=True, slots=True)
class IceCandidate:
    """A trickled ICE candidate, as RTCIceCandidateInit."""

    candidate: str
    sdp_mid: str = ""
    sdp_m_line_index: int = 0
    username_fragment: str = ""


@dataclass(frozen=True, slots=True)
class ConferenceSummary:
    """A conference's entry in the call history (``wac.v1.ConferenceSummary``)."""

    title: str
    invitees: tuple[str, ...]
    attendees: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A read-only view of a call at one moment, the fields of ``wac.v1.Call``.

    ``end_detail`` is a human-readable explanation of the end (for logs and
    error details); it has no field in ``wac.v1.Call``. ``sip_call_id`` is
    the SIP Call-ID of a call through the gateway.
    """

    call_id: str
    caller: str
    caller_device: str
    callee: str
    state: CallState
    media: Media
    offered_devices: tuple[str, ...]
    callee_device: str | None
    create_time: float
    answer_time: float | None
    end_time: float | None
    end_reason: EndReason | None
    ended_by: str | None
    end_detail: str
    via: Via = Via.WAPI
    sip_call_id: str = ""
    conference: ConferenceSummary | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from answer to end; None unless the call was answered and ended."""
        if self.answer_time is None or self.end_time is None:
            return None
        return max(0.0, self.end_time - self.answer_time)

    def is_party(self, username: str) -> bool:
        """Whether ``username`` is the caller or the callee."""
        return username in (self.caller, self.callee)


# --- Events: what a device is told (the payloads of ``wac.v1.Event``). -----


@dataclass(frozen=True, slots=True)
class CallInvited:
    """A call is offered to this device. The servicer adds the caller's display name."""

    call: CallInfo
    offer: SessionDescription


@dataclass(frozen=True, slots=True)
class CallRinging:
    """The caller's call reached at least one callee device."""

    call: CallInfo


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The caller's call was answered."""

    call: CallInfo
    answer: SessionDescription


@dataclass(frozen=True, slots=True)
class CallUpdated:
    """The other party renegotiated, or answered a renegotiation."""

    call: CallInfo
    description: SessionDescription


@dataclass(frozen=True, slots=True)
class IceCandidateReceived:
    """An ICE candidate from the other party; ``candidate`` is None with end_of_candidates."""

    call_id: str
    candidate: IceCandidate | None
    end_of_candidates: bool


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call ended for this device; ``reason`` may differ from the call's own."""

    call: CallInfo
    reason: EndReason


CallEvent: TypeAlias = CallInvited | CallRinging | CallAnswered | CallUpdated | IceCandidateReceived | CallEnded


# --- Effects: what the servicer must do. -------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Publish ``event`` to each of ``to_devices`` (never empty)."""

    to_devices: tuple[str, ...]
    event: CallEvent


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Start, or move, this call's timer of ``kind`` to fire at ``at`` (wall clock).

    When it fires, call :meth:`CallMachine.timer_fired`.
    """

    kind: TimerKind
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Cancel this call's timer of ``kind``, if any."""

    kind: TimerKind


Effect: TypeAlias = Deliver | StartTimer | CancelTimer


# --- SDP plausibility. -------------------------------------------------------


def check_sdp(field: str, sdp: str, max_bytes: int = DEFAULT_MAX_SDP_BYTES) -> None:
    """Raise INVALID_ARGUMENT naming ``field`` unless ``sdp`` looks like SDP.

    Plausible means: not empty, at most ``max_bytes`` UTF-8 bytes, a first
    line "v=0", an origin ("o=") line and at least one media ("m=") line. It
    is a sanity check against junk and mix-ups, not a parser: the browsers
    at both ends parse the SDP for real.
    """
    if not sdp:
        raise _invalid(field, "is required")
    size = len(sdp.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise _invalid(field, f"is {size} bytes long; at most {max_bytes} are allowed")
    lines = sdp.splitlines()
    if lines[0].strip() != "v=0":
        raise _invalid(field, 'is not an SDP session description: it must start with "v=0"')
    if not any(line.startswith("o=") for line in lines):
        raise _invalid(field, 'has no origin ("o=") line')
    if not any(line.startswith("m=") for line in lines):
        raise _invalid(field, 'has no media ("m=") line')


def _check_description(
    field: str, description: SessionDescription, expected: Iterable[DescriptionType], max_bytes: int
) -> None:
    allowed = tuple(expected)
    if description.type not in allowed:
        names = " or ".join(t.value for t in allowed)
        raise _invalid(f"{field}.type", f"must be {names}")
    check_sdp(f"{field}.sdp", description.sdp, max_bytes)


def is_uri_callee(callee: str) -> bool:
    """Whether ``callee`` is a tel:, sip: or sips: URI rather than a username."""
    return callee.lower().startswith(_URI_SCHEMES)


# --- The machine. ------------------------------------------------------------


class CallMachine:
    """One call's signalling state. Build it with :meth:`create` or :meth:`restore`.

    Every input method either returns the effects of the transition or
    raises :class:`CallError` and leaves the machine as it was.
    """

    def __init__(
        self,
        *,
        call_id: str,
        caller: str,
        caller_device: str,
        callee: str,
        media: Media,
        create_time: float,
        devices: Mapping[str, DeviceState],
        state: CallState = CallState.RINGING,
        answered_device: str | None = None,
        answer_time: float | None = None,
        end_time: float | None = None,
        end_reason: EndReason | None = None,
        ended_by: str | None = None,
        end_detail: str = "",
        ring_deadline: float | None = None,
        offer_outstanding_from: Side | None = None,
        ice_candidates: int = 0,
        max_ice_candidates: int = DEFAULT_MAX_ICE_CANDIDATES,
        max_sdp_bytes: int = DEFAULT_MAX_SDP_BYTES,
    ) -> None:
        """Prefer :meth:`create` and :meth:`restore`; this sets fields as given."""
        if max_ice_candidates < 1:
            raise ValueError("max_ice_candidates must be at least 1")
        if max_sdp_bytes < 1:
            raise ValueError("max_sdp_bytes must be at least 1")
        self.call_id = call_id
        self.caller = caller
        self.caller_device = caller_device
        self.callee = callee
        self.media = media
        self.create_time = create_time
        # Insertion order is the order the devices were offered in.
        self.devices: dict[str, DeviceState] = dict(devices)
        self.state = state
        self.answered_device = answered_device
        self.answer_time = answer_time
        self.end_time = end_time
        self.end_reason = end_reason
        self.ended_by = ended_by
        self.end_detail = end_detail
        self.ring_deadline = ring_deadline
        self.offer_outstanding_from = offer_outstanding_from
        self.ice_candidates = ice_candidates
        self.max_ice_candidates = max_ice_candidates
        self.max_sdp_bytes = max_sdp_bytes

    # -- Reading. --

    def info(self) -> CallInfo:
        """The call as it is now."""
        return CallInfo(
            call_id=self.call_id,
            caller=self.caller,
            caller_device=self.caller_device,
            callee=self.callee,
            state=self.state,
            media=self.media,
            offered_devices=tuple(self.devices),
            callee_device=self.answered_device,
            create_time=self.create_time,
            answer_time=self.answer_time,
            end_time=self.end_time,
            end_reason=self.end_reason,
            ended_by=self.ended_by,
            end_detail=self.end_detail,
        )

    @property
    def ringing_devices(self) -> tuple[str, ...]:
        """The offered devices still ringing, in offer order."""
        return tuple(d for d, s in self.devices.items() if s is DeviceState.RINGING)

    def pending_timers(self) -> list[StartTimer]:
        """The timers this call needs now; re-create them after :meth:`restore`."""
        if self.state is CallState.RINGING and self.ring_deadline is not None:
            return [StartTimer(TimerKind.RING, self.ring_deadline)]
        return []

    # -- Creating. --

    @classmethod
    def create(
        cls,
        *,
        call_id: str,
        caller: str,
        caller_device: str,
        callee: str,
        media: Media,
        offer: SessionDescription,
        online_devices: Iterable[str],
        now: float,
        callee_busy: bool = False,
        busy_on_busy: bool = False,
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
        max_ice_candidates: int = DEFAULT_MAX_ICE_CANDIDATES,
        max_sdp_bytes: int = DEFAULT_MAX_SDP_BYTES,
        caller_live_calls: int = 0,
        callee_ringing_calls: int = 0,
        max_calls_per_caller: int = DEFAULT_MAX_CALLS_PER_CALLER,
        max_ringing_per_callee: int = DEFAULT_MAX_RINGING_PER_CALLEE,
    ) -> tuple[CallMachine, list[Effect]]:
        """Offer a call; the machine and the effects of its first transition.

        ``online_devices`` are the callee's online sessions now; they become
        the offered devices. ``callee_busy`` says the callee is in another
        call. ``ring_timeout`` (seconds, > 0) bounds the ringing.
        ``caller_live_calls`` are the calls the caller has placed that are
        ringing or active now, ``callee_ringing_calls`` the calls ringing at
        the callee now; the two maxima (>= 1) bound them.
        """
        if ring_timeout <= 0:
            raise ValueError("ring_timeout must be positive")
        if max_calls_per_caller < 1 or max_ringing_per_callee < 1:
            raise ValueError("max_calls_per_caller and max_ringing_per_callee must be at least 1")
        if not callee:
            raise _invalid("callee", "is required")
        if callee == caller:
            raise _invalid("callee", "a subscriber cannot call itself")
        if not (media.audio or media.video):
            raise _invalid("media", "must include audio or video")
        _check_description("offer", offer, (DescriptionType.OFFER,), max_sdp_bytes)

        # A device never rings for its own call; dict.fromkeys keeps offer order.
        online = [d for d in dict.fromkeys(online_devices) if d != caller_device]
        if is_uri_callee(callee):
            early: tuple[EndReason, str] | None = (
                EndReason.UNAVAILABLE,
                "PSTN/SIP routing is not configured",
            )
        elif not online:
            early = (EndReason.UNAVAILABLE, "the callee has no device online")
        elif callee_busy and busy_on_busy:
            early = (EndReason.BUSY, "the callee is in another call")
        else:
            early = None
        if caller_live_calls >= max_calls_per_caller:
            raise _exhausted(
                f"you have {caller_live_calls} calls ringing or active; at most "
                f"{max_calls_per_caller} are allowed: end one before placing another"
            )
        if early is None and callee_ringing_calls >= max_ringing_per_callee:
            raise _exhausted(
                f"the callee has {callee_ringing_calls} calls ringing already; at most "
                f"{max_ringing_per_callee} may ring at once: try again later"
            )
        machine = cls(
            call_id=call_id,
            caller=caller,
            caller_device=caller_device,
            callee=callee,
            media=media,
            create_time=now,
            # A call that ends at once was offered to no device.
            devices={} if early else dict.fromkeys(online, DeviceState.RINGING),
            max_ice_candidates=max_ice_candidates,
            max_sdp_bytes=max_sdp_bytes,
        )
        if early is not None:
            reason, detail = early
            return machine, machine._end(reason, ENDED_BY_WAC, now, detail, [((caller_device,), reason)])

        machine.ring_deadline = now + ring_timeout
        call = machine.info()
        return machine, [
            Deliver(tuple(online), CallInvited(call, offer)),
            Deliver((caller_device,), CallRinging(call)),
            StartTimer(TimerKind.RING, machine.ring_deadline),
        ]

    # -- Callee inputs. --

    def answer(self, *, device: str, answer: SessionDescription, now: float) -> list[Effect]:
        """A callee device accepts the call with its SDP answer."""
        self._require_offered(device, "answer")
        _check_description("answer", answer, (DescriptionType.ANSWER,), self.max_sdp_bytes)
        self._require_ringing_call()
        if self.devices[device] is not DeviceState.RINGING:
            raise _precondition(self._why_not_ringing(device))

        others = tuple(d for d in self.ringing_devices if d != device)
        self.state = CallState.ACTIVE
        self.answered_device = device
        self.answer_time = now
        self.devices[device] = DeviceState.ANSWERED
        for other in others:
            self.devices[other] = DeviceState.ENDED
        call = self.info()
        effects: list[Effect] = [Deliver((self.caller_device,), CallAnswered(call, answer))]
        if others:
            effects.append(Deliver(others, CallEnded(call, EndReason.ANSWERED_ELSEWHERE)))
        effects.extend(self._cancel_ring_timer())
        return effects

    def reject(self, *, device: str, busy: bool = False, now: float) -> list[Effect]:
        """A ringing callee device declines the call, or reports itself busy."""
        self._require_offered(device, "reject")
        self._require_ringing_call()
        if self.devices[device] is not DeviceState.RINGING:
            raise _precondition(self._why_not_ringing(device))
        if busy:
            self.devices[device] = DeviceState.REJECTED
            others = tuple(d for d in self.ringing_devices if d != device)
            for other in others:
                self.devices[other] = DeviceState.ENDED
            return self._end(
                EndReason.BUSY,
                self.callee,
                now,
                "a device of the callee is busy",
                [((self.caller_device, *others), EndReason.BUSY)],
            )
        return self._stop_ringing(device, DeviceState.REJECTED, now)

    # -- Either party. --

    def hangup(self, *, by_username: str, by_device: str | None, now: float) -> list[Effect]:
        """End the call. ``by_device`` None means an operator through SAPI."""
        if by_device is None:
            self._require_not_ended()
            ringing = self.ringing_devices
            if self.state is CallState.RINGING:
                for device in ringing:
                    self.devices[device] = DeviceState.ENDED
                others: tuple[str, ...] = ringing
            else:
                others = (self.answered_device,) if self.answered_device else ()
            return self._end(
                EndReason.OPERATOR,
                ENDED_BY_OPERATOR,
                now,
                f"ended by operator {by_username}" if by_username else "ended by an operator",
                [((self.caller_device, *others), EndReason.OPERATOR)],
            )

        side = self._side_of(by_username, by_device)
        self._require_not_ended()
        if self.state is CallState.RINGING:
            if side is Side.CALLEE:
                if self.devices[by_device] is not DeviceState.RINGING:
                    raise _precondition(self._why_not_ringing(by_device))
                return self._stop_ringing(by_device, DeviceState.REJECTED, now)
            ringing = self.ringing_devices
            for device in ringing:
                self.devices[device] = DeviceState.ENDED
            return self._end(
                EndReason.CANCELLED,
                self.caller,
                now,
                "the caller hung up",
                [(ringing, EndReason.CANCELLED)],
            )

        if side is Side.CALLEE and by_device != self.answered_device:
            raise _precondition("the call was answered on another device")
        other = self._device_of(side.other)
        return self._end(
            EndReason.COMPLETED,
            by_username,
            now,
            f"{'the caller' if side is Side.CALLER else 'the callee'} hung up",
            [((other,), EndReason.COMPLETED)],
        )

    def ice_candidate(
        self,
        *,
        from_device: str,
        candidate: IceCandidate | None,
        end_of_candidates: bool = False,
        now: float,
    ) -> list[Effect]:
        """Relay a trickled ICE candidate, or an end-of-candidates marker, to the other party."""
        if from_device == self.caller_device:
            side = Side.CALLER
        elif from_device in self.devices:
            side = Side.CALLEE
        else:
            raise _denied("this device is not a party to the call")
        if candidate is None and not end_of_candidates:
            raise _invalid("candidate", "is required unless end_of_candidates is set")
        if candidate is not None and end_of_candidates:
            raise _invalid("candidate", "must be unset when end_of_candidates is set")
        if candidate is not None and len(candidate.candidate.encode(errors="surrogatepass")) > MAX_CANDIDATE_BYTES:
            raise _invalid("candidate.candidate", f"is longer than {MAX_CANDIDATE_BYTES} bytes")
        self._require_not_ended()

        targets: tuple[str, ...]
        if side is Side.CALLER:
            if self.state is CallState.RINGING:
                targets = self.ringing_devices
            else:
                targets = (self.answered_device,) if self.answered_device else ()
        elif self.devices[from_device] in (DeviceState.RINGING, DeviceState.ANSWERED):
            targets = (self.caller_device,)
        else:
            return []  # declined, lost, or lost the race: its connection is going away
        if not targets:
            return []

        if self.ice_candidates >= self.max_ice_candidates:
            raise CallError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"the call relayed its maximum of {self.max_ice_candidates} ICE candidates",
            )
        self.ice_candidates += 1
        event = IceCandidateReceived(self.call_id, candidate, end_of_candidates)
        return [Deliver(targets, event)]

    def renegotiate(self, *, from_device: str, description: SessionDescription, now: float) -> list[Effect]:
        """Relay a new offer, or the answer to the other side's offer, of an active call."""
        if from_device != self.caller_device and from_device not in self.devices:
            raise _denied("this device is not a party to the call")
        _check_description(
            "description",
            description,
            (DescriptionType.OFFER, DescriptionType.ANSWER),
            self.max_sdp_bytes,
        )
        self._require_not_ended()
        if self.state is CallState.RINGING:
            raise _precondition("the call is not answered yet; renegotiation needs an active call")
        if from_device == self.caller_device:
            side = Side.CALLER
        elif from_device == self.answered_device:
            side = Side.CALLEE
        else:
            raise _precondition("the call was answered on another device")

        outstanding = self.offer_outstanding_from
        if description.type is DescriptionType.OFFER:
            if side is Side.CALLEE and outstanding is Side.CALLER:
                raise _precondition("renegotiation glare: the caller's offer wins; answer it and retry")
            # No offer, our own older offer, or (caller only) the callee's
            # offer, which this one overrides.
            self.offer_outstanding_from = side
        else:
            if outstanding is not side.other:
                raise _precondition("no offer from the other party is outstanding to answer")
            self.offer_outstanding_from = None
        call = self.info()
        return [Deliver((self._device_of(side.other),), CallUpdated(call, description))]

    # -- Timers and connectivity. --

    def timer_fired(self, kind: TimerKind, *, now: float) -> list[Effect]:
        """A timer started by :class:`StartTimer` fired. Stale timers do nothing."""
        if kind is not TimerKind.RING or self.state is not CallState.RINGING:
            return []
        if self.ring_deadline is None:
            return []
        if now < self.ring_deadline:
            return [StartTimer(TimerKind.RING, self.ring_deadline)]
        self.ring_deadline = None  # it has fired: nothing to cancel
        ringing = self.ringing_devices
        for device in ringing:
            self.devices[device] = DeviceState.ENDED
        return self._end(
            EndReason.NO_ANSWER,
            ENDED_BY_WAC,
            now,
            "nobody answered in time",
            [((self.caller_device, *ringing), EndReason.NO_ANSWER)],
        )

    def device_lost(self, device: str, *, now: float) -> list[Effect]:
        """A device's connection stayed down past the grace period. Never raises."""
        if self.state is CallState.ENDED:
            return []
        if device == self.caller_device:
            if self.state is CallState.RINGING:
                ringing = self.ringing_devices
                for other in ringing:
                    self.devices[other] = DeviceState.ENDED
                targets = ringing
            else:
                targets = (self.answered_device,) if self.answered_device else ()
            return self._end(
                EndReason.FAILED,
                ENDED_BY_WAC,
                now,
                "the caller's device was lost",
                [(targets, EndReason.FAILED)],
            )
        if device not in self.devices:
            return []
        if self.state is CallState.RINGING:
            if self.devices[device] is not DeviceState.RINGING:
                return []
            return self._stop_ringing(device, DeviceState.LOST, now)
        if device != self.answered_device:
            return []
        return self._end(
            EndReason.FAILED,
            ENDED_BY_WAC,
            now,
            "the callee's device was lost",
            [((self.caller_device,), EndReason.FAILED)],
        )

    # -- Persistence. --

    def snapshot(self) -> dict[str, Any]:
        """The whole call as a JSON-ready dict, for :meth:`restore`."""
        return {
            "version": SNAPSHOT_VERSION,
            "call_id": self.call_id,
            "caller": self.caller,
            "caller_device": self.caller_device,
            "callee": self.callee,
            "media": {"audio": self.media.audio, "video": self.media.video},
            "create_time": self.create_time,
            "devices": [[device, state.value] for device, state in self.devices.items()],
            "state": self.state.value,
            "answered_device": self.answered_device,
            "answer_time": self.answer_time,
            "end_time": self.end_time,
            "end_reason": self.end_reason.value if self.end_reason else None,
            "ended_by": self.ended_by,
            "end_detail": self.end_detail,
            "ring_deadline": self.ring_deadline,
            "offer_outstanding_from": (self.offer_outstanding_from.value if self.offer_outstanding_from else None),
            "ice_candidates": self.ice_candidates,
            "max_ice_candidates": self.max_ice_candidates,
            "max_sdp_bytes": self.max_sdp_bytes,
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> CallMachine:
        """Rebuild a machine from :meth:`snapshot`; ValueError if ``data`` is not one."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported call snapshot version {data.get('version')!r}")
        try:
            end_reason = data["end_reason"]
            outstanding = data["offer_outstanding_from"]
            return cls(
                call_id=str(data["call_id"]),
                caller=str(data["caller"]),
                caller_device=str(data["caller_device"]),
                callee=str(data["callee"]),
                media=Media(audio=bool(data["media"]["audio"]), video=bool(data["media"]["video"])),
                create_time=float(data["create_time"]),
                devices={str(d): DeviceState(s) for d, s in data["devices"]},
                state=CallState(data["state"]),
                answered_device=data["answered_device"],
                answer_time=_optional_float(data["answer_time"]),
                end_time=_optional_float(data["end_time"]),
                end_reason=EndReason(end_reason) if end_reason is not None else None,
                ended_by=data["ended_by"],
                end_detail=str(data["end_detail"]),
                ring_deadline=_optional_float(data["ring_deadline"]),
                offer_outstanding_from=Side(outstanding) if outstanding is not None else None,
                ice_candidates=int(data["ice_candidates"]),
                max_ice_candidates=int(data["max_ice_candidates"]),
                max_sdp_bytes=int(data["max_sdp_bytes"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed call snapshot: {exc!r}") from exc

    # -- Internals. --

    def _require_offered(self, device: str, action: str) -> None:
        if device == self.caller_device:
            raise _denied(f"the caller cannot {action} its own call")
        if device not in self.devices:
            raise _denied("the call was not offered to this device")

    def _require_not_ended(self) -> None:
        if self.state is CallState.ENDED:
            raise _precondition("call has ended")

    def _require_ringing_call(self) -> None:
        self._require_not_ended()
        if self.state is CallState.ACTIVE:
            raise _precondition("call already answered")

    def _why_not_ringing(self, device: str) -> str:
        state = self.devices[device]
        if state is DeviceState.REJECTED:
            return "this device already declined the call"
        return "the call no longer rings on this device"

    def _side_of(self, username: str, device: str) -> Side:
        if username == self.caller and device == self.caller_device:
            return Side.CALLER
        if username == self.callee and device in self.devices:
            return Side.CALLEE
        raise _denied("this device is not a party to the call")

    def _device_of(self, side: Side) -> str:
        if side is Side.CALLER:
            return self.caller_device
        assert self.answered_device is not None, "only an active call has a callee device"
        return self.answered_device

    def _cancel_ring_timer(self) -> list[Effect]:
        if self.ring_deadline is None:
            return []
        self.ring_deadline = None
        return [CancelTimer(TimerKind.RING)]

    def _stop_ringing(self, device: str, state: DeviceState, now: float) -> list[Effect]:
        """One callee device stops ringing; the call ends once none rings."""
        self.devices[device] = state
        if self.ringing_devices:
            return []
        if all(s is DeviceState.REJECTED for s in self.devices.values()):
            reason, by, detail = (
                EndReason.REJECTED,
                self.callee,
                "every device of the callee declined",
            )
        else:
            reason, by, detail = (
                EndReason.NO_ANSWER,
                ENDED_BY_WAC,
                "no device of the callee rings any more",
            )
        return self._end(reason, by, now, detail, [((self.caller_device,), reason)])

    def _end(
        self,
        reason: EndReason,
        ended_by: str,
        now: float,
        detail: str,
        notify: Iterable[tuple[tuple[str, ...], EndReason]],
    ) -> list[Effect]:
        """End the call; callers have already moved the callee devices' states."""
        self.state = CallState.ENDED
        self.end_time = now
        self.end_reason = reason
        self.ended_by = ended_by
        self.end_detail = detail
        self.offer_outstanding_from = None
        call = self.info()
        effects: list[Effect] = [
            Deliver(devices, CallEnded(call, device_reason)) for devices, device_reason in notify if devices
        ]
        effects.extend(self._cancel_ring_timer())
        return effects


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
