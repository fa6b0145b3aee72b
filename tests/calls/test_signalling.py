"""Call signalling between online devices over a real core: each test
asserts the exact call events every device receives."""

from __future__ import annotations

import asyncio

import grpc

from tests.calls.support import (
    ANSWER,
    CANDIDATE,
    OFFER,
    SDP,
    VIDEO_SDP,
    Call,
    World,
    eventually,
    fails,
)

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
# Less than any fake interval a test measures, more than float rounding.
TICK = 0.001


async def test_basic_call(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")

    call = await alice.create("bob")
    assert call.state == Call.RINGING
    assert (call.caller, call.callee) == ("alice", "bob")
    assert (call.caller_device, list(call.offered_devices)) == (alice.session_id, [bob.session_id])
    assert len(call.call_id) >= 22

    (invited,) = await bob.expect("call_invited")
    assert invited.call.call_id == call.call_id
    assert invited.offer.type == OFFER and invited.offer.sdp == SDP
    assert invited.caller_display_name == "Alice Liddell"
    (ringing,) = await alice.expect("call_ringing")
    assert ringing.call.state == Call.RINGING

    answered = await bob.answer(call.call_id)
    assert answered.state == Call.ACTIVE
    assert answered.callee_device == bob.session_id
    assert answered.HasField("answer_time")
    (event,) = await alice.expect("call_answered")
    assert event.answer.type == ANSWER and event.answer.sdp == SDP
    assert event.call.state == Call.ACTIVE

    ended = await alice.hangup(call.call_id)
    assert (ended.state, ended.end_reason, ended.ended_by) == (Call.ENDED, Call.COMPLETED, "alice")
    (event,) = await bob.expect("call_ended")
    assert event.reason == Call.COMPLETED
    assert event.call.end_reason == Call.COMPLETED

    # The history keeps the call with all its times.
    record = await bob.get(call.call_id)
    assert record.state == Call.ENDED and record.end_reason == Call.COMPLETED
    assert record.HasField("create_time") and record.HasField("end_time")
    assert record.HasField("duration")
    span = record.end_time.ToNanoseconds() - record.answer_time.ToNanoseconds()
    # Times and durations are kept to the microsecond, each rounded on its own.
    assert abs(record.duration.ToNanoseconds() - span) <= 1000
    await alice.quiet()
    await bob.quiet()


async def test_callee_hangs_up(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")
    await bob.answer(call.call_id)
    await alice.expect("call_answered")

    ended = await bob.hangup(call.call_id)
    assert (ended.end_reason, ended.ended_by) == (Call.COMPLETED, "bob")
    (event,) = await alice.expect("call_ended")
    assert event.reason == Call.COMPLETED
    await fails(FAILED_PRECONDITION, alice.hangup(call.call_id), "call has ended")
    await bob.quiet()


async def test_reject(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")

    rejected = await bob.reject(call.call_id)
    assert (rejected.state, rejected.end_reason, rejected.ended_by) == (Call.ENDED, Call.REJECTED, "bob")
    (event,) = await alice.expect("call_ended")
    assert event.reason == Call.REJECTED
    await bob.quiet()


async def test_reject_busy_ends_every_device(world: World) -> None:
    alice = await world.device("alice")
    bob1, bob2 = await world.device("bob", "phone"), await world.device("bob", "laptop")
    call = await alice.create("bob")
    await bob1.expect("call_invited")
    await bob2.expect("call_invited")
    await alice.expect("call_ringing")

    rejected = await bob1.reject(call.call_id, busy=True)
    assert rejected.end_reason == Call.BUSY
    ((a,), (b2,)) = await asyncio.gather(alice.expect("call_ended"), bob2.expect("call_ended"))
    assert a.reason == b2.reason == Call.BUSY
    await bob1.quiet()


async def test_cancel(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")

    cancelled = await alice.hangup(call.call_id)
    assert (cancelled.end_reason, cancelled.ended_by) == (Call.CANCELLED, "alice")
    (event,) = await bob.expect("call_ended")
    assert event.reason == Call.CANCELLED
    await fails(FAILED_PRECONDITION, bob.answer(call.call_id), "call has ended")
    await alice.quiet()


async def test_no_answer(world_with) -> None:
    async with world_with({"WAC_CALLS_RING_TIMEOUT": "45"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.expect("call_invited")
        await alice.expect("call_ringing")

        await world.advance(45 - TICK)
        await asyncio.gather(alice.quiet(), bob.quiet())
        assert (await alice.get(call.call_id)).state == Call.RINGING
        await world.advance(TICK)
        ((a,), (b,)) = await asyncio.gather(alice.expect("call_ended"), bob.expect("call_ended"))
        assert a.reason == b.reason == Call.NO_ANSWER
        assert a.call.ended_by == "wac"
        record = await alice.get(call.call_id)
        assert (record.end_reason, record.ended_by) == (Call.NO_ANSWER, "wac")
        assert not record.HasField("duration")
        await world.advance(2 * 45)
        await asyncio.gather(alice.quiet(), bob.quiet())


async def test_callee_offline_is_unavailable(world: World) -> None:
    alice = await world.device("alice")
    await world.subscriber("bob")
    call = await alice.create("bob")
    assert (call.state, call.end_reason, call.ended_by) == (Call.ENDED, Call.UNAVAILABLE, "wac")
    assert list(call.offered_devices) == []
    (event,) = await alice.expect("call_ended")
    assert event.reason == Call.UNAVAILABLE


async def test_phone_numbers_end_unavailable_and_stay_in_history(world: World) -> None:
    alice = await world.device("alice")
    for target in ("tel:+34911234567", "sip:someone@example.org"):
        call = await alice.create(target)
        assert (call.callee, call.end_reason) == (target, Call.UNAVAILABLE)
        (event,) = await alice.expect("call_ended")
        assert event.reason == Call.UNAVAILABLE
        await world.advance(1)  # the next call is a second newer
    listed = await alice.list()
    assert [c.callee for c in listed.calls] == ["sip:someone@example.org", "tel:+34911234567"]


async def test_answered_elsewhere(world: World) -> None:
    alice = await world.device("alice")
    phone, laptop = await world.device("bob", "phone"), await world.device("bob", "laptop")
    call = await alice.create("bob")
    assert set(call.offered_devices) == {phone.session_id, laptop.session_id}
    await phone.expect("call_invited")
    await laptop.expect("call_invited")
    await alice.expect("call_ringing")

    await laptop.answer(call.call_id)
    (answered,) = await alice.expect("call_answered")
    assert answered.call.callee_device == laptop.session_id
    (elsewhere,) = await phone.expect("call_ended")
    assert elsewhere.reason == Call.ANSWERED_ELSEWHERE
    assert elsewhere.call.state == Call.ACTIVE

    await fails(FAILED_PRECONDITION, phone.answer(call.call_id), "call already answered")
    await fails(FAILED_PRECONDITION, phone.hangup(call.call_id), "answered on another device")
    await alice.hangup(call.call_id)
    (event,) = await laptop.expect("call_ended")
    assert event.reason == Call.COMPLETED
    await phone.quiet()


async def test_racing_answers_first_wins(world: World) -> None:
    alice = await world.device("alice")
    phone, laptop = await world.device("bob", "phone"), await world.device("bob", "laptop")
    call = await alice.create("bob")
    await phone.expect("call_invited")
    await laptop.expect("call_invited")

    results = await asyncio.gather(phone.answer(call.call_id), laptop.answer(call.call_id), return_exceptions=True)
    winners = [r for r in results if isinstance(r, type(call))]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code() == FAILED_PRECONDITION
    assert "call already answered" in (losers[0].details() or "")
    (_, answered) = await alice.expect("call_ringing", "call_answered")
    assert answered.call.callee_device == winners[0].callee_device


async def test_busy_on_busy(world_with) -> None:
    async with world_with({"WAC_CALLS_BUSY_ON_BUSY": "true"}) as world:
        alice, bob, carol = (
            await world.device("alice"),
            await world.device("bob"),
            await world.device("carol"),
        )
        call = await alice.create("bob")
        await bob.expect("call_invited")
        await alice.expect("call_ringing")
        # Ringing is not busy: carol's call to alice rings alongside.
        ringing_too = await carol.create("alice")
        assert ringing_too.state == Call.RINGING
        await carol.expect("call_ringing")
        await alice.expect("call_invited")
        await carol.hangup(ringing_too.call_id)
        await alice.expect("call_ended")

        await bob.answer(call.call_id)
        await alice.expect("call_answered")

        # Both parties of the active call are busy now.
        for callee in ("bob", "alice"):
            busy = await carol.create(callee)
            assert (busy.state, busy.end_reason, busy.ended_by) == (Call.ENDED, Call.BUSY, "wac")
            (event,) = await carol.expect("call_ended")
            assert event.reason == Call.BUSY
        await alice.quiet()
        await bob.quiet()

        # Once the call is over they are reachable again.
        await alice.hangup(call.call_id)
        await bob.expect("call_ended")
        again = await carol.create("bob")
        assert again.state == Call.RINGING


async def test_call_waiting_without_busy_on_busy(world: World) -> None:
    alice, bob, carol = await world.device("alice"), await world.device("bob"), await world.device("carol")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await bob.answer(call.call_id)

    waiting = await carol.create("bob")
    assert waiting.state == Call.RINGING
    (invited,) = await bob.expect("call_invited")
    assert invited.call.call_id == waiting.call_id
    assert invited.caller_display_name == "Carol King"


async def test_glare_two_independent_calls(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    a_to_b, b_to_a = await asyncio.gather(alice.create("bob"), bob.create("alice"))
    assert a_to_b.call_id != b_to_a.call_id
    assert a_to_b.state == b_to_a.state == Call.RINGING
    alice_events = {e.WhichOneof("payload"): e for e in [await alice.next(), await alice.next()]}
    bob_events = {e.WhichOneof("payload"): e for e in [await bob.next(), await bob.next()]}
    assert alice_events["call_invited"].call_invited.call.call_id == b_to_a.call_id
    assert alice_events["call_ringing"].call_ringing.call.call_id == a_to_b.call_id
    assert bob_events["call_invited"].call_invited.call.call_id == a_to_b.call_id
    assert bob_events["call_ringing"].call_ringing.call.call_id == b_to_a.call_id

    # Each call goes its own way: one answered, the other declined.
    await bob.answer(a_to_b.call_id)
    await alice.reject(b_to_a.call_id)
    (answered,) = await alice.expect("call_answered")
    assert answered.call.call_id == a_to_b.call_id
    (ended,) = await bob.expect("call_ended")
    assert (ended.call.call_id, ended.reason) == (b_to_a.call_id, Call.REJECTED)
    assert (await alice.get(a_to_b.call_id)).state == Call.ACTIVE


async def test_ice_relay_before_and_after_answer(world: World) -> None:
    alice = await world.device("alice")
    phone, laptop = await world.device("bob", "phone"), await world.device("bob", "laptop")
    call = await alice.create("bob")
    await phone.expect("call_invited")
    await laptop.expect("call_invited")
    await alice.expect("call_ringing")

    # Before the answer: the caller's candidates reach every ringing device,
    # and each ringing device's reach the caller.
    await alice.ice(call.call_id)
    ((p,), (lp,)) = await asyncio.gather(phone.expect("ice_candidate"), laptop.expect("ice_candidate"))
    assert lp == p
    assert p.call_id == call.call_id and p.candidate.candidate == CANDIDATE
    assert p.candidate.sdp_mid == "0" and p.candidate.username_fragment == "uf"
    await phone.ice(call.call_id)
    (c,) = await alice.expect("ice_candidate")
    assert c.candidate.candidate == CANDIDATE

    await laptop.answer(call.call_id)
    await alice.expect("call_answered")
    await phone.expect("call_ended")

    # After: only between the caller and the answering device.
    await alice.ice(call.call_id)
    await laptop.expect("ice_candidate")
    await alice.ice(call.call_id, None)
    (done,) = await laptop.expect("ice_candidate")
    assert done.end_of_candidates and not done.HasField("candidate")
    await laptop.ice(call.call_id)
    await alice.expect("ice_candidate")
    await phone.ice(call.call_id)  # lost the race: dropped silently
    await alice.quiet()
    await phone.quiet()


async def test_ice_bounds(world_with) -> None:
    async with world_with({"WAC_CALLS_MAX_CANDIDATES": "3"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.answer(call.call_id)
        await fails(
            grpc.StatusCode.INVALID_ARGUMENT,
            alice.ice(call.call_id, "candidate:" + "x" * 1024),
            "candidate.candidate",
        )
        for _ in range(3):
            await alice.ice(call.call_id)
        await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.ice(call.call_id), "maximum of 3")


async def test_renegotiation_both_ways(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    await alice.expect("call_ringing")
    await fails(FAILED_PRECONDITION, alice.renegotiate(call.call_id, OFFER), "not answered yet")
    await bob.answer(call.call_id)
    await alice.expect("call_answered")

    # The caller adds video.
    updated = await alice.renegotiate(call.call_id, OFFER, VIDEO_SDP)
    assert updated.state == Call.ACTIVE
    (offer,) = await bob.expect("call_updated")
    assert (offer.description.type, offer.description.sdp) == (OFFER, VIDEO_SDP)
    await bob.renegotiate(call.call_id, ANSWER, VIDEO_SDP)
    (answer,) = await alice.expect("call_updated")
    assert answer.description.type == ANSWER

    # The callee puts the call on hold.
    await bob.renegotiate(call.call_id, OFFER)
    (offer,) = await alice.expect("call_updated")
    assert offer.description.type == OFFER
    await alice.renegotiate(call.call_id, ANSWER)
    (answer,) = await bob.expect("call_updated")
    assert answer.description.type == ANSWER

    # An answer with no offer outstanding is refused.
    await fails(FAILED_PRECONDITION, bob.renegotiate(call.call_id, ANSWER), "no offer")


async def test_renegotiation_glare_caller_wins(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.answer(call.call_id)
    await bob.expect("call_invited")
    await alice.expect("call_ringing", "call_answered")

    # The callee offers first, then the caller: the caller's offer replaces it.
    await bob.renegotiate(call.call_id, OFFER)
    await alice.expect("call_updated")
    await alice.renegotiate(call.call_id, OFFER, VIDEO_SDP)
    (offer,) = await bob.expect("call_updated")
    assert offer.description.sdp == VIDEO_SDP
    # The callee's offer is void: the caller cannot answer it any more...
    await fails(FAILED_PRECONDITION, alice.renegotiate(call.call_id, ANSWER), "no offer")
    # ...and while the caller's is outstanding the callee cannot offer.
    await fails(FAILED_PRECONDITION, bob.renegotiate(call.call_id, OFFER), "the caller's offer wins")
    await bob.renegotiate(call.call_id, ANSWER, VIDEO_SDP)
    (answer,) = await alice.expect("call_updated")
    assert answer.description.type == ANSWER
    await alice.quiet()


async def test_device_lost_ends_active_call(world_with) -> None:
    async with world_with({"WAC_PRESENCE_GRACE_PERIOD": "20"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.answer(call.call_id)
        await alice.expect("call_ringing", "call_answered")
        await bob.expect("call_invited")

        await bob.disconnect()
        await world.advance(20 - TICK)
        await alice.quiet()
        assert (await alice.get(call.call_id)).state == Call.ACTIVE, "still within the grace period"
        await world.advance(TICK)
        (ended,) = await alice.expect("call_ended")
        assert ended.reason == Call.FAILED
        assert (ended.call.end_reason, ended.call.ended_by) == (Call.FAILED, "wac")
        record = await bob.get(call.call_id)
        assert record.end_reason == Call.FAILED
        await world.advance(2 * 20)
        await alice.quiet()


async def test_short_blip_keeps_the_call(world_with) -> None:
    async with world_with({"WAC_PRESENCE_GRACE_PERIOD": "20"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.answer(call.call_id)
        await alice.expect("call_ringing", "call_answered")
        await bob.disconnect()
        await world.advance(20 - TICK)
        await bob.connect()
        await world.advance(2 * 20)  # well past where the grace period would have ended
        assert (await alice.get(call.call_id)).state == Call.ACTIVE
        await alice.quiet()


async def test_caller_lost_while_ringing(world_with) -> None:
    async with world_with({"WAC_PRESENCE_GRACE_PERIOD": "20"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.expect("call_invited")
        await alice.disconnect()
        await world.advance(20 - TICK)
        await bob.quiet()
        await world.advance(TICK)
        (ended,) = await bob.expect("call_ended")
        assert ended.reason == Call.FAILED
        assert (await bob.get(call.call_id)).ended_by == "wac"


async def test_logout_is_lost_at_once(world: World) -> None:
    from wac.v1 import identity_pb2, identity_pb2_grpc

    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.answer(call.call_id)
    await alice.expect("call_ringing", "call_answered")
    identity = identity_pb2_grpc.IdentityServiceStub(world.channel)
    await identity.Logout(identity_pb2.LogoutRequest(), metadata=bob.metadata)
    (ended,) = await alice.expect("call_ended")
    assert ended.reason == Call.FAILED


async def test_operator_hangup_and_reads(world: World) -> None:
    from wac.v1 import calls_pb2

    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await bob.answer(call.call_id)
    await alice.expect("call_ringing", "call_answered")
    await bob.expect("call_invited")

    reader = await world.service("reports", "calls.read")
    got = await reader.calls.GetCall(calls_pb2.GetCallRequest(call_id=call.call_id), metadata=reader.metadata)
    assert got.state == Call.ACTIVE
    listed = await reader.calls.ListCalls(
        calls_pb2.ListCallsRequest(subscriber="bob", state=Call.ACTIVE), metadata=reader.metadata
    )
    assert [c.call_id for c in listed.calls] == [call.call_id]
    await fails(
        grpc.StatusCode.NOT_FOUND,
        reader.calls.GetCall(calls_pb2.GetCallRequest(call_id="nope"), metadata=reader.metadata),
    )
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        reader.calls.HangupCall(calls_pb2.HangupCallRequest(call_id=call.call_id), metadata=reader.metadata),
        "calls.write",
    )

    operator = await world.service("noc", "calls.write")
    ended = await operator.calls.HangupCall(
        calls_pb2.HangupCallRequest(call_id=call.call_id), metadata=operator.metadata
    )
    assert (ended.end_reason, ended.ended_by) == (Call.OPERATOR, "operator")
    ((a,), (b,)) = await asyncio.gather(alice.expect("call_ended"), bob.expect("call_ended"))
    assert a.reason == b.reason == Call.OPERATOR
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        operator.calls.GetCall(calls_pb2.GetCallRequest(call_id=call.call_id), metadata=operator.metadata),
        "calls.read",
    )
    await fails(
        FAILED_PRECONDITION,
        operator.calls.HangupCall(calls_pb2.HangupCallRequest(call_id=call.call_id), metadata=operator.metadata),
        "call has ended",
    )


async def test_presence_reads_in_call_while_active(world: World) -> None:
    from wac.v1 import presence_pb2, presence_pb2_grpc

    alice, bob = await world.device("alice"), await world.device("bob")
    reader = await world.service("wallboard", "presence.read")
    presence = presence_pb2_grpc.PresenceServiceStub(world.channel)

    async def bob_reason() -> int:
        request = presence_pb2.GetPresenceRequest(username="bob")
        return (await presence.GetPresence(request, metadata=reader.metadata)).reason

    async def in_call() -> bool:
        return await bob_reason() == presence_pb2.Presence.IN_CALL

    async def not_in_call() -> bool:
        return not await in_call()

    call = await alice.create("bob")
    assert await not_in_call()  # ringing is not in a call
    await bob.answer(call.call_id)
    await eventually(in_call)
    await alice.hangup(call.call_id)
    await eventually(not_in_call)
