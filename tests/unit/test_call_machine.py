"""The call state machine, rule by rule: no server, no clock, no I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from core.calls.machine import (
    CallAnswered,
    CallEnded,
    CallError,
    CallInvited,
    CallMachine,
    CallRinging,
    CallState,
    CallUpdated,
    CancelTimer,
    Deliver,
    DescriptionType,
    DeviceState,
    Effect,
    EndReason,
    ErrorCode,
    IceCandidate,
    IceCandidateReceived,
    Media,
    SessionDescription,
    Side,
    StartTimer,
    TimerKind,
    check_sdp,
    is_uri_callee,
)

T0 = 1_700_000_000.0
RING_TIMEOUT = 30.0
SDP = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
)
OFFER = SessionDescription(DescriptionType.OFFER, SDP)
ANSWER = SessionDescription(DescriptionType.ANSWER, SDP)
CANDIDATE = IceCandidate("candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host", "0", 0, "abcd")


def ring(devices: Sequence[str] = ("b1", "b2"), *, now: float = T0, **options: Any) -> tuple[CallMachine, list[Effect]]:
    """alice (device a1) calls bob, whose online devices are ``devices``."""
    arguments: dict[str, Any] = {
        "call_id": "call-1",
        "caller": "alice",
        "caller_device": "a1",
        "callee": "bob",
        "media": Media(audio=True, video=False),
        "offer": OFFER,
        "online_devices": devices,
        "now": now,
        "ring_timeout": RING_TIMEOUT,
    }
    arguments.update(options)
    return CallMachine.create(**arguments)


def ringing(devices: Sequence[str] = ("b1", "b2")) -> CallMachine:
    return ring(devices)[0]


def active(devices: Sequence[str] = ("b1", "b2"), *, answered: str = "b1") -> CallMachine:
    machine = ringing(devices)
    machine.answer(device=answered, answer=ANSWER, now=T0 + 5)
    return machine


def ended_for(effects: Iterable[Effect]) -> dict[str, EndReason]:
    """Each device told the call ended, and the reason it was given."""
    told: dict[str, EndReason] = {}
    for effect in effects:
        if isinstance(effect, Deliver) and isinstance(effect.event, CallEnded):
            for device in effect.to_devices:
                assert device not in told, f"{device} told twice"
                told[device] = effect.event.reason
    return told


def deliveries(effects: Iterable[Effect]) -> list[Deliver]:
    return [e for e in effects if isinstance(e, Deliver)]


def timers(effects: Iterable[Effect]) -> list[Effect]:
    return [e for e in effects if isinstance(e, StartTimer | CancelTimer)]


def assert_refused(machine: CallMachine, code: ErrorCode, message: str | None, action: Any) -> CallError:
    """``action`` raises ``code`` and leaves the machine exactly as it was."""
    before = machine.snapshot()
    with pytest.raises(CallError) as raised:
        action()
    assert raised.value.code is code
    if message is not None:
        assert raised.value.message == message
    assert machine.snapshot() == before
    return raised.value


# --- Create. -------------------------------------------------------------------


def test_create_invites_every_online_device_and_rings_the_caller() -> None:
    machine, effects = ring(("b1", "b2"))
    call = machine.info()
    assert call.state is CallState.RINGING
    assert call.offered_devices == ("b1", "b2")
    assert effects == [
        Deliver(("b1", "b2"), CallInvited(call, OFFER)),
        Deliver(("a1",), CallRinging(call)),
        StartTimer(TimerKind.RING, T0 + RING_TIMEOUT),
    ]
    assert call.create_time == T0
    assert call.end_reason is None and call.ended_by is None and call.duration is None


def test_create_offers_each_device_once_and_never_the_callers_own() -> None:
    machine, effects = ring(("b1", "a1", "b2", "b1"))
    assert machine.info().offered_devices == ("b1", "b2")
    assert deliveries(effects)[0].to_devices == ("b1", "b2")


@pytest.mark.parametrize("callee", ["tel:+34600111222", "sip:carol@example.org", "sips:carol@example.org", "TEL:+1"])
def test_create_to_a_uri_ends_at_once_unavailable(callee: str) -> None:
    machine, effects = ring(("b1",), callee=callee)
    call = machine.info()
    assert call.state is CallState.ENDED
    assert call.end_reason is EndReason.UNAVAILABLE
    assert call.end_detail == "PSTN/SIP routing is not configured"
    assert call.ended_by == "wac"
    assert call.offered_devices == ()
    assert call.end_time == T0
    assert effects == [Deliver(("a1",), CallEnded(call, EndReason.UNAVAILABLE))]


def test_create_with_no_device_online_ends_at_once_unavailable() -> None:
    machine, effects = ring(())
    assert machine.state is CallState.ENDED
    assert machine.end_reason is EndReason.UNAVAILABLE
    assert machine.end_detail == "the callee has no device online"
    assert ended_for(effects) == {"a1": EndReason.UNAVAILABLE}
    assert timers(effects) == []


def test_create_to_a_busy_callee_with_busy_on_busy_ends_at_once_busy() -> None:
    machine, effects = ring(("b1",), callee_busy=True, busy_on_busy=True)
    assert machine.end_reason is EndReason.BUSY
    assert machine.info().offered_devices == ()
    assert ended_for(effects) == {"a1": EndReason.BUSY}
    assert timers(effects) == []


def test_create_to_a_busy_callee_without_busy_on_busy_rings() -> None:
    machine, effects = ring(("b1",), callee_busy=True, busy_on_busy=False)
    assert machine.state is CallState.RINGING
    assert isinstance(deliveries(effects)[0].event, CallInvited)


def test_create_busy_on_busy_needs_a_busy_callee() -> None:
    machine, _ = ring(("b1",), callee_busy=False, busy_on_busy=True)
    assert machine.state is CallState.RINGING


def test_create_a_uri_wins_over_no_device_and_busy() -> None:
    machine, _ = ring((), callee="tel:+34600111222", callee_busy=True, busy_on_busy=True)
    assert machine.end_detail == "PSTN/SIP routing is not configured"


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"callee": ""}, "callee", "callee: is required"),
        ({"callee": "alice"}, "callee", "callee: a subscriber cannot call itself"),
        (
            {"media": Media(audio=False, video=False)},
            "media",
            "media: must include audio or video",
        ),
        ({"offer": ANSWER}, "offer.type", "offer.type: must be OFFER"),
        (
            {"offer": SessionDescription(DescriptionType.OFFER, "")},
            "offer.sdp",
            "offer.sdp: is required",
        ),
        (
            {"offer": SessionDescription(DescriptionType.OFFER, "hello")},
            "offer.sdp",
            'offer.sdp: is not an SDP session description: it must start with "v=0"',
        ),
        (
            {"offer": OFFER, "max_sdp_bytes": 10},
            "offer.sdp",
            f"offer.sdp: is {len(SDP)} bytes long; at most 10 are allowed",
        ),
    ],
)
def test_create_refuses_invalid_arguments(options: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(CallError) as raised:
        ring(**options)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    assert raised.value.field == field
    assert raised.value.message == message


def test_create_needs_a_positive_ring_timeout() -> None:
    with pytest.raises(ValueError, match="ring_timeout"):
        ring(ring_timeout=0)


def test_a_caller_at_its_bound_of_live_calls_is_refused() -> None:
    """Issue 14, item 8 (call bombing): the caller's side of the bound."""
    machine, _ = ring(caller_live_calls=3, max_calls_per_caller=4)
    assert machine.state is CallState.RINGING
    for live in (4, 5):
        with pytest.raises(CallError) as raised:
            ring(caller_live_calls=live, max_calls_per_caller=4)
        assert raised.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert raised.value.message == (
            f"you have {live} calls ringing or active; at most 4 are allowed: end one before placing another"
        )
    # Whatever the callee: a call that would end at once is refused too.
    with pytest.raises(CallError) as raised:
        ring((), caller_live_calls=4, max_calls_per_caller=4)
    assert raised.value.code is ErrorCode.RESOURCE_EXHAUSTED


def test_a_callee_at_its_bound_of_ringing_calls_gets_no_more_invitations() -> None:
    """Issue 14, item 8 (call bombing): the callee's side of the bound."""
    machine, effects = ring(callee_ringing_calls=7, max_ringing_per_callee=8)
    assert isinstance(deliveries(effects)[0].event, CallInvited)
    with pytest.raises(CallError) as raised:
        ring(callee_ringing_calls=8, max_ringing_per_callee=8)
    assert raised.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert raised.value.message == (
        "the callee has 8 calls ringing already; at most 8 may ring at once: try again later"
    )
    # A call that rings nobody (no device online) is not refused for it.
    machine, _ = ring((), callee_ringing_calls=8, max_ringing_per_callee=8)
    assert machine.end_reason is EndReason.UNAVAILABLE


def test_the_bounds_are_checked_after_the_arguments() -> None:
    with pytest.raises(CallError) as raised:
        ring(callee="alice", caller_live_calls=9, callee_ringing_calls=9)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_the_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_calls_per_caller"):
        ring(max_calls_per_caller=0)
    with pytest.raises(ValueError, match="max_ringing_per_callee"):
        ring(max_ringing_per_callee=0)


def test_video_only_media_is_accepted() -> None:
    machine, _ = ring(media=Media(audio=False, video=True))
    assert machine.info().media == Media(audio=False, video=True)


def test_is_uri_callee() -> None:
    assert is_uri_callee("tel:+1")
    assert is_uri_callee("Sip:x@y")
    assert not is_uri_callee("bob")
    assert not is_uri_callee("telly")


# --- Answer. -----------------------------------------------------------------


def test_first_answer_wins_and_ends_the_other_ringing_devices() -> None:
    machine = ringing(("b1", "b2", "b3"))
    effects = machine.answer(device="b2", answer=ANSWER, now=T0 + 4)
    call = machine.info()
    assert call.state is CallState.ACTIVE
    assert call.callee_device == "b2"
    assert call.answer_time == T0 + 4
    assert effects == [
        Deliver(("a1",), CallAnswered(call, ANSWER)),
        Deliver(("b1", "b3"), CallEnded(call, EndReason.ANSWERED_ELSEWHERE)),
        CancelTimer(TimerKind.RING),
    ]
    assert machine.devices == {
        "b1": DeviceState.ENDED,
        "b2": DeviceState.ANSWERED,
        "b3": DeviceState.ENDED,
    }


def test_answer_on_the_only_device_tells_nobody_else() -> None:
    machine = ringing(("b1",))
    effects = machine.answer(device="b1", answer=ANSWER, now=T0 + 1)
    assert ended_for(effects) == {}
    assert timers(effects) == [CancelTimer(TimerKind.RING)]


def test_answered_elsewhere_skips_devices_that_declined() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b1", now=T0 + 1)
    effects = machine.answer(device="b2", answer=ANSWER, now=T0 + 2)
    assert ended_for(effects) == {"b3": EndReason.ANSWERED_ELSEWHERE}


def test_second_answer_fails_call_already_answered() -> None:
    machine = active(("b1", "b2"))
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call already answered",
        lambda: machine.answer(device="b2", answer=ANSWER, now=T0 + 6),
    )


def test_answer_after_the_end_fails_call_has_ended() -> None:
    machine = ringing(("b1",))
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 1)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call has ended",
        lambda: machine.answer(device="b1", answer=ANSWER, now=T0 + 2),
    )


def test_answer_from_a_device_that_declined_fails() -> None:
    machine = ringing(("b1", "b2"))
    machine.reject(device="b1", now=T0 + 1)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "this device already declined the call",
        lambda: machine.answer(device="b1", answer=ANSWER, now=T0 + 2),
    )


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("zz", "the call was not offered to this device"),
        ("a1", "the caller cannot answer its own call"),
    ],
)
def test_answer_from_a_device_not_offered_is_denied(device: str, message: str) -> None:
    machine = ringing()
    assert_refused(
        machine,
        ErrorCode.PERMISSION_DENIED,
        message,
        lambda: machine.answer(device=device, answer=ANSWER, now=T0 + 1),
    )


def test_answer_checks_the_sdp_answer() -> None:
    machine = ringing()
    error = assert_refused(
        machine,
        ErrorCode.INVALID_ARGUMENT,
        "answer.type: must be ANSWER",
        lambda: machine.answer(device="b1", answer=OFFER, now=T0 + 1),
    )
    assert error.field == "answer.type"
    bad = SessionDescription(DescriptionType.ANSWER, "v=0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n")
    error = assert_refused(
        machine,
        ErrorCode.INVALID_ARGUMENT,
        'answer.sdp: has no origin ("o=") line',
        lambda: machine.answer(device="b1", answer=bad, now=T0 + 1),
    )
    assert error.field == "answer.sdp"


# --- Reject. -----------------------------------------------------------------


def test_busy_from_any_device_ends_the_call_busy_for_everyone_else() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b3", now=T0 + 1)
    effects = machine.reject(device="b1", busy=True, now=T0 + 2)
    assert machine.state is CallState.ENDED
    assert machine.end_reason is EndReason.BUSY
    assert machine.ended_by == "bob"
    assert ended_for(effects) == {"a1": EndReason.BUSY, "b2": EndReason.BUSY}
    assert timers(effects) == [CancelTimer(TimerKind.RING)]


def test_a_decline_stops_one_device_and_the_call_rings_on() -> None:
    machine = ringing(("b1", "b2"))
    assert machine.reject(device="b1", now=T0 + 1) == []
    assert machine.state is CallState.RINGING
    assert machine.ringing_devices == ("b2",)
    assert machine.devices["b1"] is DeviceState.REJECTED


def test_the_last_decline_ends_the_call_rejected() -> None:
    machine = ringing(("b1", "b2"))
    machine.reject(device="b1", now=T0 + 1)
    effects = machine.reject(device="b2", now=T0 + 2)
    call = machine.info()
    assert call.end_reason is EndReason.REJECTED
    assert call.ended_by == "bob"
    assert call.end_time == T0 + 2
    assert effects == [
        Deliver(("a1",), CallEnded(call, EndReason.REJECTED)),
        CancelTimer(TimerKind.RING),
    ]


def test_declining_twice_fails() -> None:
    machine = ringing(("b1", "b2"))
    machine.reject(device="b1", now=T0 + 1)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "this device already declined the call",
        lambda: machine.reject(device="b1", now=T0 + 2),
    )


def test_reject_after_answer_or_end_fails() -> None:
    machine = active(("b1", "b2"))
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call already answered",
        lambda: machine.reject(device="b2", now=T0 + 6),
    )
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 7)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call has ended",
        lambda: machine.reject(device="b2", busy=True, now=T0 + 8),
    )


def test_the_caller_cannot_reject() -> None:
    machine = ringing()
    assert_refused(
        machine,
        ErrorCode.PERMISSION_DENIED,
        "the caller cannot reject its own call",
        lambda: machine.reject(device="a1", now=T0 + 1),
    )


# --- Hangup. -----------------------------------------------------------------


def test_caller_hangup_while_ringing_cancels() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b2", now=T0 + 1)
    effects = machine.hangup(by_username="alice", by_device="a1", now=T0 + 3)
    assert machine.end_reason is EndReason.CANCELLED
    assert machine.ended_by == "alice"
    assert ended_for(effects) == {"b1": EndReason.CANCELLED, "b3": EndReason.CANCELLED}
    assert timers(effects) == [CancelTimer(TimerKind.RING)]
    assert machine.info().duration is None


def test_callee_device_hangup_while_ringing_is_a_decline() -> None:
    machine = ringing(("b1", "b2"))
    assert machine.hangup(by_username="bob", by_device="b1", now=T0 + 1) == []
    assert machine.devices["b1"] is DeviceState.REJECTED
    effects = machine.hangup(by_username="bob", by_device="b2", now=T0 + 2)
    assert machine.end_reason is EndReason.REJECTED
    assert ended_for(effects) == {"a1": EndReason.REJECTED}


def test_hangup_of_an_active_call_by_the_caller_completes() -> None:
    machine = active(("b1", "b2"))
    effects = machine.hangup(by_username="alice", by_device="a1", now=T0 + 65)
    call = machine.info()
    assert call.end_reason is EndReason.COMPLETED
    assert call.ended_by == "alice"
    assert call.duration == 60.0
    assert effects == [Deliver(("b1",), CallEnded(call, EndReason.COMPLETED))]


def test_hangup_of_an_active_call_by_the_callee_completes() -> None:
    machine = active(("b1", "b2"))
    effects = machine.hangup(by_username="bob", by_device="b1", now=T0 + 15)
    assert machine.ended_by == "bob"
    assert machine.info().duration == 10.0
    assert ended_for(effects) == {"a1": EndReason.COMPLETED}
    assert timers(effects) == []


def test_another_callee_device_cannot_hang_up_an_answered_call() -> None:
    machine = active(("b1", "b2"))
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "the call was answered on another device",
        lambda: machine.hangup(by_username="bob", by_device="b2", now=T0 + 6),
    )


def test_operator_hangup_while_ringing_tells_the_caller_and_ringing_devices() -> None:
    machine = ringing(("b1", "b2"))
    effects = machine.hangup(by_username="ops", by_device=None, now=T0 + 2)
    assert machine.end_reason is EndReason.OPERATOR
    assert machine.ended_by == "operator"
    assert machine.end_detail == "ended by operator ops"
    assert ended_for(effects) == {
        "a1": EndReason.OPERATOR,
        "b1": EndReason.OPERATOR,
        "b2": EndReason.OPERATOR,
    }
    assert timers(effects) == [CancelTimer(TimerKind.RING)]


def test_operator_hangup_while_active_tells_both_parties() -> None:
    machine = active(("b1", "b2"))
    effects = machine.hangup(by_username="", by_device=None, now=T0 + 20)
    assert ended_for(effects) == {"a1": EndReason.OPERATOR, "b1": EndReason.OPERATOR}
    assert machine.info().duration == 15.0


def test_hangup_of_an_ended_call_fails() -> None:
    machine = active()
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 10)
    for by_username, by_device in [("alice", "a1"), ("bob", "b1"), ("ops", None)]:
        assert_refused(
            machine,
            ErrorCode.FAILED_PRECONDITION,
            "call has ended",
            lambda u=by_username, d=by_device: machine.hangup(by_username=u, by_device=d, now=T0 + 11),
        )


@pytest.mark.parametrize(
    ("username", "device"),
    [("mallory", "m1"), ("mallory", "a1"), ("alice", "b1"), ("bob", "a1"), ("bob", "zz")],
)
def test_hangup_by_a_non_party_is_denied(username: str, device: str) -> None:
    machine = ringing()
    assert_refused(
        machine,
        ErrorCode.PERMISSION_DENIED,
        "this device is not a party to the call",
        lambda: machine.hangup(by_username=username, by_device=device, now=T0 + 1),
    )


# --- ICE candidates. ---------------------------------------------------------


def test_caller_candidates_go_to_every_ringing_device_before_the_answer() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b3", now=T0 + 1)
    effects = machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0 + 1)
    assert effects == [Deliver(("b1", "b2"), IceCandidateReceived("call-1", CANDIDATE, False))]


def test_caller_candidates_go_to_the_answering_device_after_the_answer() -> None:
    machine = active(("b1", "b2"), answered="b2")
    effects = machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0 + 6)
    assert [d.to_devices for d in deliveries(effects)] == [("b2",)]


def test_callee_candidates_go_to_the_caller() -> None:
    machine = ringing(("b1", "b2"))
    before = machine.ice_candidate(from_device="b2", candidate=CANDIDATE, now=T0 + 1)
    assert [d.to_devices for d in deliveries(before)] == [("a1",)]
    machine.answer(device="b1", answer=ANSWER, now=T0 + 2)
    after = machine.ice_candidate(from_device="b1", candidate=CANDIDATE, now=T0 + 3)
    assert [d.to_devices for d in deliveries(after)] == [("a1",)]


def test_candidates_from_a_device_that_lost_the_race_are_dropped_silently() -> None:
    machine = active(("b1", "b2"), answered="b1")
    count = machine.ice_candidates
    assert machine.ice_candidate(from_device="b2", candidate=CANDIDATE, now=T0 + 6) == []
    assert machine.ice_candidates == count


def test_candidates_from_a_device_that_declined_are_dropped_silently() -> None:
    machine = ringing(("b1", "b2"))
    machine.reject(device="b1", now=T0 + 1)
    assert machine.ice_candidate(from_device="b1", candidate=CANDIDATE, now=T0 + 2) == []


def test_end_of_candidates_is_relayed_without_a_candidate() -> None:
    machine = active(("b1",))
    effects = machine.ice_candidate(from_device="b1", candidate=None, end_of_candidates=True, now=T0 + 6)
    assert effects == [Deliver(("a1",), IceCandidateReceived("call-1", None, True))]


@pytest.mark.parametrize(
    ("candidate", "end", "field", "message"),
    [
        (None, False, "candidate", "candidate: is required unless end_of_candidates is set"),
        (CANDIDATE, True, "candidate", "candidate: must be unset when end_of_candidates is set"),
        (
            IceCandidate("x" * 1025),
            False,
            "candidate.candidate",
            "candidate.candidate: is longer than 1024 bytes",
        ),
    ],
)
def test_invalid_candidates_are_refused(candidate: IceCandidate | None, end: bool, field: str, message: str) -> None:
    machine = ringing()
    error = assert_refused(
        machine,
        ErrorCode.INVALID_ARGUMENT,
        message,
        lambda: machine.ice_candidate(from_device="a1", candidate=candidate, end_of_candidates=end, now=T0),
    )
    assert error.field == field


def test_a_candidate_of_exactly_1024_bytes_is_accepted() -> None:
    machine = ringing()
    effects = machine.ice_candidate(from_device="a1", candidate=IceCandidate("x" * 1024), now=T0)
    assert len(effects) == 1


def test_candidates_per_call_are_bounded() -> None:
    machine, _ = ring(("b1",), max_ice_candidates=3)
    for _ in range(2):
        machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0)
    machine.ice_candidate(from_device="b1", candidate=None, end_of_candidates=True, now=T0)
    assert machine.ice_candidates == 3
    assert_refused(
        machine,
        ErrorCode.RESOURCE_EXHAUSTED,
        "the call relayed its maximum of 3 ICE candidates",
        lambda: machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0),
    )


def test_the_default_bound_is_200() -> None:
    machine = ringing(("b1",))
    for _ in range(200):
        machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0)
    with pytest.raises(CallError) as raised:
        machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0)
    assert raised.value.code is ErrorCode.RESOURCE_EXHAUSTED


def test_candidates_from_a_non_party_are_denied_and_after_the_end_refused() -> None:
    machine = ringing()
    assert_refused(
        machine,
        ErrorCode.PERMISSION_DENIED,
        "this device is not a party to the call",
        lambda: machine.ice_candidate(from_device="zz", candidate=CANDIDATE, now=T0),
    )
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 1)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call has ended",
        lambda: machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0 + 2),
    )


# --- Renegotiation. ----------------------------------------------------------

NEW_OFFER = SessionDescription(DescriptionType.OFFER, SDP + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
NEW_ANSWER = SessionDescription(DescriptionType.ANSWER, SDP + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n")


def test_renegotiation_needs_an_active_call() -> None:
    machine = ringing()
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "the call is not answered yet; renegotiation needs an active call",
        lambda: machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 1),
    )
    machine.answer(device="b1", answer=ANSWER, now=T0 + 2)
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 3)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "call has ended",
        lambda: machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 4),
    )


def test_caller_offer_and_callee_answer() -> None:
    machine = active(("b1", "b2"), answered="b2")
    effects = machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 10)
    assert effects == [Deliver(("b2",), CallUpdated(machine.info(), NEW_OFFER))]
    assert machine.offer_outstanding_from is Side.CALLER
    effects = machine.renegotiate(from_device="b2", description=NEW_ANSWER, now=T0 + 11)
    assert effects == [Deliver(("a1",), CallUpdated(machine.info(), NEW_ANSWER))]
    assert machine.offer_outstanding_from is None


def test_callee_offer_and_caller_answer() -> None:
    machine = active(("b1",))
    effects = machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 10)
    assert [d.to_devices for d in deliveries(effects)] == [("a1",)]
    assert machine.offer_outstanding_from is Side.CALLEE
    effects = machine.renegotiate(from_device="a1", description=NEW_ANSWER, now=T0 + 11)
    assert [d.to_devices for d in deliveries(effects)] == [("b1",)]
    assert machine.offer_outstanding_from is None


def test_an_answer_needs_an_offer_from_the_other_side() -> None:
    machine = active(("b1",))
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "no offer from the other party is outstanding to answer",
        lambda: machine.renegotiate(from_device="b1", description=NEW_ANSWER, now=T0 + 10),
    )
    machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 11)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "no offer from the other party is outstanding to answer",
        lambda: machine.renegotiate(from_device="a1", description=NEW_ANSWER, now=T0 + 12),
    )


def test_a_side_may_replace_its_own_outstanding_offer() -> None:
    machine = active(("b1",))
    machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 10)
    effects = machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 11)
    assert [d.to_devices for d in deliveries(effects)] == [("a1",)]
    assert machine.offer_outstanding_from is Side.CALLEE


def test_glare_caller_offers_first_the_callee_offer_is_refused() -> None:
    machine = active(("b1",))
    machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 10)
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "renegotiation glare: the caller's offer wins; answer it and retry",
        lambda: machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 10),
    )
    assert machine.offer_outstanding_from is Side.CALLER
    effects = machine.renegotiate(from_device="b1", description=NEW_ANSWER, now=T0 + 11)
    assert [d.to_devices for d in deliveries(effects)] == [("a1",)]
    # Now the callee may retry its own offer.
    machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 12)
    assert machine.offer_outstanding_from is Side.CALLEE


def test_glare_callee_offers_first_the_caller_offer_replaces_it() -> None:
    machine = active(("b1",))
    machine.renegotiate(from_device="b1", description=NEW_OFFER, now=T0 + 10)
    effects = machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 10)
    assert effects == [Deliver(("b1",), CallUpdated(machine.info(), NEW_OFFER))]
    assert machine.offer_outstanding_from is Side.CALLER
    # The callee's offer is void: the caller cannot answer it any more.
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "no offer from the other party is outstanding to answer",
        lambda: machine.renegotiate(from_device="a1", description=NEW_ANSWER, now=T0 + 11),
    )
    # The callee rolls back and answers the caller's offer.
    effects = machine.renegotiate(from_device="b1", description=NEW_ANSWER, now=T0 + 11)
    assert [d.to_devices for d in deliveries(effects)] == [("a1",)]
    assert machine.offer_outstanding_from is None


def test_renegotiation_only_from_the_two_devices_in_the_call() -> None:
    machine = active(("b1", "b2"), answered="b1")
    assert_refused(
        machine,
        ErrorCode.FAILED_PRECONDITION,
        "the call was answered on another device",
        lambda: machine.renegotiate(from_device="b2", description=NEW_OFFER, now=T0 + 10),
    )
    assert_refused(
        machine,
        ErrorCode.PERMISSION_DENIED,
        "this device is not a party to the call",
        lambda: machine.renegotiate(from_device="zz", description=NEW_OFFER, now=T0 + 10),
    )


def test_renegotiation_checks_the_description() -> None:
    machine = active(("b1",))
    error = assert_refused(
        machine,
        ErrorCode.INVALID_ARGUMENT,
        'description.sdp: has no media ("m=") line',
        lambda: machine.renegotiate(
            from_device="a1",
            description=SessionDescription(DescriptionType.OFFER, "v=0\no=- 1 1 IN IP4 0.0.0.0\n"),
            now=T0 + 10,
        ),
    )
    assert error.field == "description.sdp"


def test_the_end_clears_an_outstanding_offer() -> None:
    machine = active(("b1",))
    machine.renegotiate(from_device="a1", description=NEW_OFFER, now=T0 + 10)
    machine.hangup(by_username="bob", by_device="b1", now=T0 + 11)
    assert machine.offer_outstanding_from is None


# --- Ring timer. -------------------------------------------------------------


def test_ring_timeout_ends_the_call_no_answer() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b2", now=T0 + 1)
    effects = machine.timer_fired(TimerKind.RING, now=T0 + RING_TIMEOUT)
    call = machine.info()
    assert call.end_reason is EndReason.NO_ANSWER
    assert call.ended_by == "wac"
    assert call.end_time == T0 + RING_TIMEOUT
    assert ended_for(effects) == {
        "a1": EndReason.NO_ANSWER,
        "b1": EndReason.NO_ANSWER,
        "b3": EndReason.NO_ANSWER,
    }
    assert timers(effects) == []  # it fired: nothing to cancel
    assert machine.pending_timers() == []


def test_a_timer_that_fires_early_is_re_armed_for_the_deadline() -> None:
    machine = ringing()
    effects = machine.timer_fired(TimerKind.RING, now=T0 + RING_TIMEOUT - 0.01)
    assert effects == [StartTimer(TimerKind.RING, T0 + RING_TIMEOUT)]
    assert machine.state is CallState.RINGING


def test_a_stale_ring_timer_does_nothing() -> None:
    machine = active()
    assert machine.timer_fired(TimerKind.RING, now=T0 + RING_TIMEOUT) == []
    assert machine.state is CallState.ACTIVE
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 40)
    assert machine.timer_fired(TimerKind.RING, now=T0 + 41) == []


def test_the_ring_deadline_follows_the_ring_timeout() -> None:
    machine, effects = ring(now=T0 + 100, ring_timeout=45)
    assert timers(effects) == [StartTimer(TimerKind.RING, T0 + 145)]
    assert machine.pending_timers() == [StartTimer(TimerKind.RING, T0 + 145)]


def test_answered_and_ended_calls_need_no_timer() -> None:
    assert active().pending_timers() == []
    assert ring(())[0].pending_timers() == []


# --- Lost devices. -----------------------------------------------------------


def test_a_lost_ringing_device_stops_ringing() -> None:
    machine = ringing(("b1", "b2"))
    assert machine.device_lost("b1", now=T0 + 5) == []
    assert machine.devices["b1"] is DeviceState.LOST
    assert machine.state is CallState.RINGING


def test_when_the_last_ringing_device_is_lost_the_call_ends_no_answer() -> None:
    machine = ringing(("b1", "b2"))
    machine.reject(device="b1", now=T0 + 1)
    effects = machine.device_lost("b2", now=T0 + 5)
    assert machine.end_reason is EndReason.NO_ANSWER
    assert machine.ended_by == "wac"
    assert ended_for(effects) == {"a1": EndReason.NO_ANSWER}
    assert timers(effects) == [CancelTimer(TimerKind.RING)]


def test_caller_lost_while_ringing_fails_the_call_for_the_ringing_devices() -> None:
    machine = ringing(("b1", "b2"))
    effects = machine.device_lost("a1", now=T0 + 5)
    assert machine.end_reason is EndReason.FAILED
    assert machine.ended_by == "wac"
    assert ended_for(effects) == {"b1": EndReason.FAILED, "b2": EndReason.FAILED}
    assert timers(effects) == [CancelTimer(TimerKind.RING)]


@pytest.mark.parametrize(("lost", "told"), [("a1", "b1"), ("b1", "a1")])
def test_a_party_lost_while_active_fails_the_call_for_the_other(lost: str, told: str) -> None:
    machine = active(("b1", "b2"))
    effects = machine.device_lost(lost, now=T0 + 25)
    assert machine.end_reason is EndReason.FAILED
    assert machine.ended_by == "wac"
    assert machine.info().duration == 20.0
    assert ended_for(effects) == {told: EndReason.FAILED}


def test_lost_devices_outside_the_call_are_ignored_and_losing_is_idempotent() -> None:
    machine = active(("b1", "b2"))
    assert machine.device_lost("b2", now=T0 + 6) == []  # lost the race already
    assert machine.device_lost("zz", now=T0 + 6) == []
    assert machine.state is CallState.ACTIVE
    machine.device_lost("b1", now=T0 + 7)
    assert machine.device_lost("b1", now=T0 + 8) == []
    assert machine.device_lost("a1", now=T0 + 8) == []
    ringing_machine = ringing(("b1", "b2"))
    ringing_machine.device_lost("b1", now=T0 + 1)
    assert ringing_machine.device_lost("b1", now=T0 + 2) == []


# --- Two calls at once. ------------------------------------------------------


def test_calls_a_to_b_and_b_to_a_do_not_interfere() -> None:
    a_to_b, _ = CallMachine.create(
        call_id="ab", caller="alice", caller_device="a1", callee="bob", media=Media(),
        offer=OFFER, online_devices=["b1"], now=T0,
    )  # fmt: skip
    b_to_a, _ = CallMachine.create(
        call_id="ba", caller="bob", caller_device="b1", callee="alice", media=Media(),
        offer=OFFER, online_devices=["a1"], now=T0,
    )  # fmt: skip
    effects = a_to_b.answer(device="b1", answer=ANSWER, now=T0 + 1)
    assert [d.to_devices for d in deliveries(effects)] == [("a1",)]
    assert b_to_a.state is CallState.RINGING
    b_to_a.hangup(by_username="bob", by_device="b1", now=T0 + 2)
    assert b_to_a.end_reason is EndReason.CANCELLED
    assert a_to_b.state is CallState.ACTIVE
    assert a_to_b.ice_candidates == 0 and b_to_a.ice_candidates == 0


# --- Persistence. ------------------------------------------------------------


def _round_trip(machine: CallMachine) -> CallMachine:
    restored = CallMachine.restore(json.loads(json.dumps(machine.snapshot())))
    assert restored.snapshot() == machine.snapshot()
    assert restored.info() == machine.info()
    return restored


def test_snapshot_round_trip_while_ringing_re_creates_the_ring_timer() -> None:
    machine = ringing(("b1", "b2", "b3"))
    machine.reject(device="b2", now=T0 + 1)
    machine.device_lost("b3", now=T0 + 2)
    machine.ice_candidate(from_device="a1", candidate=CANDIDATE, now=T0 + 2)
    restored = _round_trip(machine)
    assert restored.pending_timers() == [StartTimer(TimerKind.RING, T0 + RING_TIMEOUT)]
    assert restored.ice_candidates == 1
    effects = restored.timer_fired(TimerKind.RING, now=T0 + RING_TIMEOUT + 1)
    assert ended_for(effects) == {"a1": EndReason.NO_ANSWER, "b1": EndReason.NO_ANSWER}


def test_snapshot_round_trip_while_active_keeps_renegotiation_state() -> None:
    machine = active(("b1", "b2"), answered="b2")
    machine.renegotiate(from_device="b2", description=NEW_OFFER, now=T0 + 9)
    restored = _round_trip(machine)
    assert restored.pending_timers() == []
    effects = restored.renegotiate(from_device="a1", description=NEW_ANSWER, now=T0 + 10)
    assert [d.to_devices for d in deliveries(effects)] == [("b2",)]


def test_snapshot_round_trip_of_an_ended_call() -> None:
    machine = active(("b1",))
    machine.hangup(by_username="ops", by_device=None, now=T0 + 30)
    restored = _round_trip(machine)
    assert restored.info().end_reason is EndReason.OPERATOR
    assert restored.info().duration == 25.0


def test_snapshot_keeps_the_configured_bounds() -> None:
    machine, _ = ring(max_ice_candidates=7, max_sdp_bytes=4096)
    restored = _round_trip(machine)
    assert (restored.max_ice_candidates, restored.max_sdp_bytes) == (7, 4096)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(version=99),
        lambda d: d.pop("caller"),
        lambda d: d.update(state="SINGING"),
        lambda d: d.update(devices=[["b1", "HUMMING"]]),
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(damage: Any) -> None:
    data = ringing().snapshot()
    damage(data)
    with pytest.raises(ValueError):
        CallMachine.restore(data)


# --- SDP plausibility. -------------------------------------------------------


def test_check_sdp_accepts_crlf_and_lf_line_endings() -> None:
    check_sdp("offer.sdp", SDP)
    check_sdp("offer.sdp", SDP.replace("\r\n", "\n"))


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "offer.sdp: is required"),
        ("o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\nm=audio 9 RTP/AVP 0\r\n", "offer.sdp: is not an SDP "
         'session description: it must start with "v=0"'),
        ("v=1\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 RTP/AVP 0\r\n", "offer.sdp: is not an SDP "
         'session description: it must start with "v=0"'),
        ("v=0\r\nm=audio 9 RTP/AVP 0\r\n", 'offer.sdp: has no origin ("o=") line'),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", 'offer.sdp: has no media ("m=") line'),
    ],
)  # fmt: skip
def test_check_sdp_refuses_implausible_sdp(sdp: str, message: str) -> None:
    with pytest.raises(CallError) as raised:
        check_sdp("offer.sdp", sdp)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    assert raised.value.field == "offer.sdp"
    assert raised.value.message == message


def test_check_sdp_bounds_the_size_in_bytes() -> None:
    padded = SDP + "a=x:" + "é" * 100 + "\r\n"  # 2 bytes per é
    size = len(padded.encode())
    check_sdp("answer.sdp", padded, max_bytes=size)
    with pytest.raises(CallError, match=f"answer.sdp: is {size} bytes long; at most {size - 1}"):
        check_sdp("answer.sdp", padded, max_bytes=size - 1)


def test_the_default_sdp_bound_is_32_kib() -> None:
    body = SDP + "a=x:" + "y" * (32 * 1024 - len(SDP) - 6) + "\r\n"
    assert len(body) == 32 * 1024
    check_sdp("offer.sdp", body)
    with pytest.raises(CallError):
        check_sdp("offer.sdp", body + "z")


# --- Errors. -----------------------------------------------------------------


def test_error_codes_are_grpc_status_code_names() -> None:
    import grpc

    for code in ErrorCode:
        assert grpc.StatusCode[code.value].name == code.value


def test_events_carry_the_call_as_it_was_at_the_transition() -> None:
    machine, effects = ring(("b1",))
    invited = deliveries(effects)[0].event
    machine.answer(device="b1", answer=ANSWER, now=T0 + 1)
    assert isinstance(invited, CallInvited)
    assert invited.call.state is CallState.RINGING
    assert machine.info().state is CallState.ACTIVE


def test_permission_is_checked_before_arguments_and_state() -> None:
    machine = ringing()
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 1)
    for action in (
        lambda: machine.ice_candidate(from_device="zz", candidate=None, now=T0 + 2),
        lambda: machine.answer(device="zz", answer=OFFER, now=T0 + 2),
        lambda: machine.renegotiate(from_device="zz", description=ANSWER, now=T0 + 2),
    ):
        assert_refused(machine, ErrorCode.PERMISSION_DENIED, None, action)


def test_arguments_are_checked_before_state() -> None:
    machine = ringing()
    machine.hangup(by_username="alice", by_device="a1", now=T0 + 1)
    assert_refused(
        machine,
        ErrorCode.INVALID_ARGUMENT,
        "answer.type: must be ANSWER",
        lambda: machine.answer(device="b1", answer=OFFER, now=T0 + 2),
    )
