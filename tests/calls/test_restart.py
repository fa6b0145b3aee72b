"""Calls survive a core restart: their state lives in the store."""

from __future__ import annotations

import asyncio

from tests.calls.support import Call, eventually

# Less than any fake interval a test measures, more than float rounding.
TICK = 0.001


async def test_active_call_survives_a_restart(world_with) -> None:
    async with world_with({}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.answer(call.call_id)
        await alice.expect("call_ringing", "call_answered")
        await bob.expect("call_invited")

        await world.restart()
        await alice.connect()
        await bob.connect()

        record = await alice.get(call.call_id)
        assert record.state == Call.ACTIVE
        assert record.callee_device == bob.session_id
        # Signalling goes on where it left off.
        await alice.ice(call.call_id)
        await bob.expect("ice_candidate")
        ended = await bob.hangup(call.call_id)
        assert (ended.end_reason, ended.ended_by) == (Call.COMPLETED, "bob")
        (event,) = await alice.expect("call_ended")
        assert event.reason == Call.COMPLETED


async def test_ring_deadline_passed_while_down_ends_no_answer(world_with) -> None:
    async with world_with({"WAC_CALLS_RING_TIMEOUT": "45"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.expect("call_invited")

        await world.restart(before_start=world.advance(45 + 1))
        # The deadline is behind: the restored call's timer is due at once.
        assert (await alice.get(call.call_id)).state == Call.RINGING
        await world.advance(0)

        async def ended() -> bool:
            return (await alice.get(call.call_id)).state == Call.ENDED

        await eventually(ended)
        record = await alice.get(call.call_id)
        assert (record.end_reason, record.ended_by) == (Call.NO_ANSWER, "wac")


async def test_ringing_call_keeps_its_deadline_across_a_restart(world_with) -> None:
    async with world_with({"WAC_CALLS_RING_TIMEOUT": "45"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.expect("call_invited")
        await alice.expect("call_ringing")
        await world.advance(10)

        await world.restart()
        await alice.connect()
        await bob.connect()
        await world.advance(45 - 10 - TICK)
        await asyncio.gather(alice.quiet(), bob.quiet())
        assert (await alice.get(call.call_id)).state == Call.RINGING
        await world.advance(TICK)
        ((a,), (b,)) = await asyncio.gather(alice.expect("call_ended"), bob.expect("call_ended"))
        assert a.reason == b.reason == Call.NO_ANSWER


async def test_devices_that_never_return_are_lost(world_with) -> None:
    async with world_with({"WAC_PRESENCE_GRACE_PERIOD": "20"}) as world:
        alice, bob = await world.device("alice"), await world.device("bob")
        call = await alice.create("bob")
        await bob.answer(call.call_id)
        await alice.expect("call_ringing", "call_answered")

        await world.restart()
        await alice.connect()  # bob never comes back
        await world.advance(20 - TICK)
        await alice.quiet()
        assert (await alice.get(call.call_id)).state == Call.ACTIVE, "bob may still come back"
        await world.advance(TICK)
        (ended,) = await alice.expect("call_ended")
        assert (ended.reason, ended.call.ended_by) == (Call.FAILED, "wac")
        await world.advance(2 * 20)
        await alice.quiet()
