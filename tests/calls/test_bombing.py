"""Call bombing (issue 14, item 8): over native gRPC, 3,000 ringing calls
with 32 KB offers to one callee were all delivered. The live calls a caller
has placed and the calls ringing at one callee are bounded; the excess is
RESOURCE_EXHAUSTED and never reaches the callee."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

import grpc

from tests.calls.support import SDP, Device, World, fails

WorldWith = Callable[[Mapping[str, str]], AbstractAsyncContextManager[World]]

# A plausible offer just under the default 32 KB bound, as in the attack.
BIG_SDP = SDP + "".join(f"a=x-pad:{i:05d}{'x' * 80}\r\n" for i in range(340))
assert 30_000 < len(BIG_SDP) <= 32_768


async def invitations_until_ended(device: Device, call_id: str) -> list[str]:
    """The call ids of the invitations ``device`` receives before ``call_id`` ends for it."""
    invited: list[str] = []
    while True:
        event = await device.next()
        kind = event.WhichOneof("payload")
        if kind == "call_invited":
            invited.append(event.call_invited.call.call_id)
        elif kind == "call_ended" and event.call_ended.call.call_id == call_id:
            return invited


async def test_a_caller_has_at_most_its_bound_of_live_calls(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    await world.subscriber("carol")
    placed = [await alice.create("bob") for _ in range(4)]  # the default bound
    error = await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("bob"), "at most 4 are allowed")
    assert error.details().startswith("you have 4 calls ringing or active")
    # A call to anyone else, even one that would end at once, counts against the same bound.
    await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("carol"))
    await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("tel:+34600111222"))

    # An answered call still counts; an ended one frees its place.
    await bob.answer(placed[0].call_id)
    await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("bob"))
    await alice.hangup(placed[0].call_id)
    await alice.create("bob")
    await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("bob"))
    # The callee's place is its own: bob may still call alice.
    await bob.create("alice")


async def test_a_flood_at_one_callee_rings_it_at_most_its_bound(world_with: WorldWith) -> None:
    # The caller's own bound and the per-caller rate lifted, so only the
    # callee's bound is tested: a slow flood within any rate must meet it too.
    unlimited = {
        "WAC_CALLS_MAX_CALLS_PER_CALLER": "1000",
        "WAC_CORE_RATE_PER_SECOND": "10000",
        "WAC_CORE_RATE_BURST": "10000",
    }
    async with world_with(unlimited) as world:
        alice, carol = await world.device("alice"), await world.device("carol")
        flood = 200
        outcomes = await asyncio.gather(
            *(alice.create("carol", sdp=BIG_SDP) for _ in range(flood)), return_exceptions=True
        )
        placed = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(placed) == 8, "the default max_ringing_per_callee"
        assert len(refused) == flood - 8
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "at most 8 may ring at once" in refused[0].details()

        # Every invitation was published before its CreateCall returned; the
        # end of one call, published after, closes what carol was sent.
        await alice.hangup(placed[0].call_id)
        invited = await invitations_until_ended(carol, placed[0].call_id)
        assert sorted(invited) == sorted(c.call_id for c in placed)

        # A place freed by the hangup rings again; the bound holds after it.
        await alice.create("carol")
        await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.create("carol"), "may ring at once")


async def test_many_callers_at_one_callee_share_its_bound(world_with: WorldWith) -> None:
    async with world_with({"WAC_CALLS_MAX_RINGING_PER_CALLEE": "3"}) as world:
        alice, bob, carol = await world.device("alice"), await world.device("bob"), await world.device("carol")
        outcomes = await asyncio.gather(
            *(caller.create("carol") for caller in (alice, bob) for _ in range(4)), return_exceptions=True
        )
        placed = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(placed) == 3 and len(refused) == 5
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}

        # Answering takes a call out of ringing: another may ring.
        answered = placed[0]
        await carol.answer(answered.call_id)
        caller = alice if answered.caller == "alice" else bob
        last = await caller.create("carol")
        vic = await world.device("vic")  # a caller with no call of its own
        await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, vic.create("carol"), "may ring at once")

        await caller.hangup(last.call_id)
        invited = await invitations_until_ended(carol, last.call_id)
        assert sorted(invited) == sorted([*(c.call_id for c in placed), last.call_id])
