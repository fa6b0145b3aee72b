"""Who may do what to a call, and what a malformed request is told."""

from __future__ import annotations

import asyncio

import grpc

from core.calls.handler import ONLINE_WAIT
from tests.calls.support import ANSWER, OFFER, SDP, Call, World, description, eventually, fails
from tests.support.core import login
from wac.v1 import calls_pb2, calls_pb2_grpc

# Less than any fake interval a test measures, more than float rounding.
TICK = 0.001

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_stranger_can_neither_act_on_nor_read_a_call(world: World) -> None:
    alice, bob, carol = await world.device("alice"), await world.device("bob"), await world.device("carol")
    call = await alice.create("bob")
    await bob.expect("call_invited")
    attempts = [
        carol.answer(call.call_id),
        carol.reject(call.call_id),
        carol.hangup(call.call_id),
        carol.ice(call.call_id),
        carol.renegotiate(call.call_id, OFFER),
        carol.get(call.call_id),
    ]
    for attempt in attempts:
        await fails(DENIED, attempt, "not a participant of this call")
    listed = await carol.list()
    assert list(listed.calls) == []
    # Nothing happened to the call.
    assert (await bob.answer(call.call_id)).state == Call.ACTIVE


async def test_unknown_call_gets_the_same_answer(world: World) -> None:
    alice = await world.device("alice")
    unknown = "AAAAAAAAAAAAAAAAAAAAAA"
    for attempt in (
        alice.answer(unknown),
        alice.reject(unknown),
        alice.hangup(unknown),
        alice.ice(unknown),
        alice.renegotiate(unknown, OFFER),
        alice.get(unknown),
    ):
        await fails(DENIED, attempt, "not a participant of this call")
    await fails(INVALID, alice.get(""), "call_id")
    await fails(INVALID, alice.get("x" * 65), "call_id")


async def test_another_device_of_the_callee_that_was_not_offered(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    late = await world.device("bob", "late")  # came online after the invite
    await fails(DENIED, late.answer(call.call_id), "not offered to this device")
    # It is a party's device all the same: it may read the call.
    assert (await late.get(call.call_id)).state == Call.RINGING
    await alice.expect("call_ringing")
    await bob.expect("call_invited")
    await late.quiet()


async def test_caller_cannot_answer_its_own_call(world: World) -> None:
    alice, _bob = await world.device("alice"), await world.device("bob")
    call = await alice.create("bob")
    await fails(DENIED, alice.answer(call.call_id), "the caller cannot answer")


async def test_oversized_sdp(world_with) -> None:
    async with world_with({"WAC_CALLS_MAX_SDP_BYTES": "400"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        big = SDP + "a=x-padding:" + "y" * 400 + "\r\n"
        error = await fails(INVALID, alice.create("bob", sdp=big), "offer.sdp")
        assert "at most 400" in (error.details() or "")
        call = await alice.create("bob")
        await fails(INVALID, bob.answer(call.call_id, big), "answer.sdp")
        await bob.answer(call.call_id)
        await fails(INVALID, alice.renegotiate(call.call_id, OFFER, big), "description.sdp")
        await fails(INVALID, bob.create("alice", sdp="hello"), "offer.sdp")


async def test_malformed_requests(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    stub, md = alice.calls, alice.metadata
    await fails(INVALID, stub.CreateCall(calls_pb2.CreateCallRequest(callee="bob"), metadata=md), "offer")
    await fails(
        INVALID,
        stub.CreateCall(calls_pb2.CreateCallRequest(callee="bob", offer=description(ANSWER)), metadata=md),
        "offer.type",
    )
    await fails(
        INVALID,
        stub.CreateCall(calls_pb2.CreateCallRequest(callee="", offer=description(OFFER)), metadata=md),
        "callee",
    )
    await fails(
        INVALID,
        stub.CreateCall(
            calls_pb2.CreateCallRequest(callee="bob", offer=description(OFFER), media=calls_pb2.Media()),
            metadata=md,
        ),
        "media",
    )
    await fails(INVALID, alice.create("alice"), "cannot call itself")
    call = await alice.create("bob")
    await fails(INVALID, bob.answer(call.call_id, "not sdp"), "answer.sdp")
    await fails(
        INVALID,
        bob.calls.AnswerCall(calls_pb2.AnswerCallRequest(call_id=call.call_id), metadata=bob.metadata),
        "answer",
    )
    request = calls_pb2.SendIceCandidateRequest(call_id=call.call_id)
    await fails(INVALID, alice.calls.SendIceCandidate(request, metadata=md), "candidate")
    request.candidate.candidate = "candidate:1"
    request.candidate.sdp_mid = "m" * 65
    await fails(INVALID, alice.calls.SendIceCandidate(request, metadata=md), "candidate.sdp_mid")


async def test_unknown_callee(world: World) -> None:
    alice = await world.device("alice")
    await fails(grpc.StatusCode.NOT_FOUND, alice.create("nobody"), "'nobody' does not exist")


async def test_missing_permissions(world: World) -> None:
    vic, pat = await world.device("vic"), await world.device("pat")
    await world.device("alice")
    await fails(DENIED, vic.create("alice", video=True), "call.video")
    call = await vic.create("alice")  # audio is fine
    assert call.state == Call.RINGING
    await fails(DENIED, pat.create("alice"), "call.audio")
    # Receiving needs nothing: pat can be called.
    alice = world.devices[-1]
    assert (await alice.create("pat")).state == Call.RINGING


async def test_caller_device_must_be_online(world: World) -> None:
    await world.device("bob")
    await world.subscriber("alice")
    session = await login(world.channel, "alice")  # logged in, but no event stream
    request = calls_pb2.CreateCallRequest(callee="bob", offer=description(OFFER))
    stub = calls_pb2_grpc.CallsServiceStub(world.channel)
    metadata = (("authorization", f"Bearer {session.access_token}"),)
    refused = asyncio.ensure_future(
        fails(
            grpc.StatusCode.FAILED_PRECONDITION,
            stub.CreateCall(request, metadata=metadata),
            "no open event stream",
        )
    )
    # The core waits ONLINE_WAIT for a stream that may be on its way.
    await eventually(lambda: any(abs(delay - ONLINE_WAIT) < 1e-6 for delay in world.clock.delays()))
    await world.advance(ONLINE_WAIT - TICK)
    assert not refused.done(), "refused before its wait was over"
    await world.advance(TICK)
    await refused


async def test_call_right_after_subscribe(world: World) -> None:
    await world.device("bob")
    alice = await world.device("alice", wait=False)  # CreateCall may overtake the stream
    assert (await alice.create("bob")).state == Call.RINGING


async def test_subscribers_list_only_their_own_calls(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    await alice.create("bob")
    await fails(DENIED, alice.list(subscriber="carol"), "only their own calls")
    assert len((await alice.list(subscriber="alice")).calls) == 1
    assert len((await bob.list()).calls) == 1
