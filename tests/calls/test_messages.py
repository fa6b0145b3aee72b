"""The calls' protobuf messages: a call's message is built once per state and
copied, so that whoever receives one owns it."""

from __future__ import annotations

from core.calls import messages
from core.calls.machine import CallMachine, CallRinging, Deliver, DescriptionType, Media, SessionDescription
from tests.calls.support import SDP
from wac.v1 import calls_pb2


def ringing_call() -> tuple[CallMachine, CallRinging]:
    machine, effects = CallMachine.create(
        call_id="c1",
        caller="alice",
        caller_device="a1",
        callee="bob",
        media=Media(audio=True, video=False),
        offer=SessionDescription(DescriptionType.OFFER, SDP),
        online_devices=("b1",),
        now=1_700_000_000.25,
    )
    (ringing,) = [e.event for e in effects if isinstance(e, Deliver) and isinstance(e.event, CallRinging)]
    return machine, ringing


def test_a_changed_call_message_does_not_change_the_next() -> None:
    machine, ringing = ringing_call()
    first = messages.call_pb(machine.info())
    expected = calls_pb2.Call()
    expected.CopyFrom(first)
    first.state = calls_pb2.Call.ENDED
    first.offered_devices.append("x9")
    first.create_time.seconds = 1

    event = messages.event_pb(ringing)
    event.call_ringing.call.callee = "mallory"

    assert messages.call_pb(machine.info()) == expected
    assert messages.event_pb(ringing).call_ringing.call == expected


def test_the_message_follows_the_call_state() -> None:
    machine, _ = ringing_call()
    ringing = messages.call_pb(machine.info())
    machine.answer(device="b1", answer=SessionDescription(DescriptionType.ANSWER, SDP), now=1_700_000_001.5)
    answered = messages.call_pb(machine.info())
    assert (ringing.state, answered.state) == (calls_pb2.Call.RINGING, calls_pb2.Call.ACTIVE)
    assert answered.callee_device == "b1"
    assert answered.answer_time.ToMicroseconds() == 1_700_000_001_500_000
