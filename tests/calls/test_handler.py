"""The calls handler without a server, on a fake clock: its timers (ring
timeout, device grace, the wait for the caller's stream, the deadlines kept
across a restart) asserted to the instant, in-call presence hooks and races,
on a real SQLite store, the in-memory event log and device registry.

Fake time proves what has *not* happened yet (a timer not due cannot have
fired); what a due timer starts is awaited with ``eventually``, since the
call's row is written in the store's own thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core import failures
from core.auth.principal import SubscriberPrincipal
from core.calls.handler import ONLINE_WAIT, CallHandler
from core.calls.incall import InCall
from core.calls.machine import CallInfo, CallState, DescriptionType, EndReason, Media, SessionDescription
from core.calls.store import CallStore
from core.cluster.devices import LocalDeviceRegistry
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.events.memory import MemoryEventLog
from settings.config import CallsConfig, IceConfig, sqlite_url
from tests.calls.support import SDP, eventually
from tests.support.clock import EPOCH, FakeClock, settle
from wac.v1 import calls_pb2

OFFER = SessionDescription(DescriptionType.OFFER, SDP)
ANSWER = SessionDescription(DescriptionType.ANSWER, SDP)
PERMISSIONS = frozenset({"call.audio", "call.video"})
RING_TIMEOUT = CallsConfig().ring_timeout
GRACE = 5.0
# Less than any fake interval a test measures, more than float rounding.
TICK = 0.001


class People:
    """The subscriber read-cache's face that calls use."""

    async def exists(self, username: str) -> bool:
        return username in {"alice", "bob", "carol"}

    async def display_name(self, username: str) -> str | None:
        return username.title() if await self.exists(username) else None


@dataclass
class Rig:
    engine: AsyncEngine
    clock: FakeClock
    handler: CallHandler = field(init=False)
    devices: LocalDeviceRegistry = field(init=False)
    events: MemoryEventLog = field(init=False)
    in_call: list[tuple[str, bool]] = field(default_factory=list)

    async def start(self) -> None:
        """A core's calls: a fresh event log and device registry (both are
        in memory, so a restarted core starts with none), the stored calls."""
        # Kept for the longest fake wait of a test, which reads whole logs.
        self.events = MemoryEventLog(retention=3600, clock=self.clock)
        self.devices = LocalDeviceRegistry(grace_period=GRACE, clock=self.clock)

        async def on_call_state(username: str, in_call: bool) -> None:
            self.in_call.append((username, in_call))

        self.handler = CallHandler(
            store=CallStore(self.engine),
            events=self.events,
            devices=self.devices,
            subscribers=People(),
            config=CallsConfig(),
            ice_config=IceConfig(),
            device_grace=GRACE,
            in_call=InCall(on_call_state),
            clock=self.clock,
        )
        await self.handler.start()

    async def restart(self, *, down_for: float = 0.0) -> None:
        await self.handler.stop()
        await self.clock.advance(down_for)
        await self.start()

    async def online(self, username: str, session_id: str) -> SubscriberPrincipal:
        await self.events.open(session_id, username)
        await self.devices.stream_opened(username, session_id)
        return SubscriberPrincipal(username, session_id, PERMISSIONS, expires_at=2e9)

    async def state(self, who: SubscriberPrincipal, call_id: str) -> CallState:
        return (await self.handler.get(who, call_id)).state

    async def ended(self, who: SubscriberPrincipal, call_id: str) -> CallInfo:
        """The call, once its end (started by a timer) is carried out: written,
        then told to ``who``'s device, whose log this waits for."""

        async def told() -> bool:
            return any(kind == "call_ended" for kind, _ in await self.heard(who.session_id))

        await eventually(told)
        call = await self.handler.get(who, call_id)
        assert call.state is CallState.ENDED
        return call

    async def heard(self, session_id: str) -> list[tuple[str, int]]:
        """The call events in the session's log: (kind, end reason of call_ended)."""
        out = []
        for event in await self.events.read(session_id, 0):
            kind = event.WhichOneof("payload")
            out.append((kind, event.call_ended.reason if kind == "call_ended" else 0))
        return out


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    rig_ = Rig(engine, FakeClock())
    await rig_.start()
    try:
        yield rig_
    finally:
        await rig_.handler.stop()
        await dispose(engine)


# --- In-call presence and races. -----------------------------------------------


async def test_in_call_presence_follows_active_calls(rig: Rig) -> None:
    alice, bob, carol = (
        await rig.online("alice", "a1"),
        await rig.online("bob", "b1"),
        await rig.online("carol", "c1"),
    )
    calls = rig.handler
    first = await calls.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.clock.advance(RING_TIMEOUT - TICK)
    assert rig.in_call == []  # ringing is not in a call
    await calls.answer(bob, first.call_id, ANSWER)
    await settle()
    assert rig.in_call == [("alice", True), ("bob", True)]

    # Bob was in a call already: presence hears only about carol.
    second = await calls.create(carol, callee="bob", media=Media(), offer=OFFER)
    await calls.answer(bob, second.call_id, ANSWER)
    await settle()
    assert rig.in_call[2:] == [("carol", True)]

    # Bob is still in the second call when the first ends.
    await calls.hangup(alice, first.call_id)
    await settle()
    assert rig.in_call[3:] == [("alice", False)]
    await calls.hangup(bob, second.call_id)
    await settle()
    assert sorted(rig.in_call[4:]) == [("bob", False), ("carol", False)]


async def test_a_call_that_never_became_active_leaves_presence_alone(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.handler.reject(bob, call.call_id, busy=False)
    await rig.clock.advance(RING_TIMEOUT + GRACE)
    assert rig.in_call == []
    assert rig.clock.pending() == 0, "the ring timer went with the call"


async def test_racing_answers_on_the_handler(rig: Rig) -> None:
    alice = await rig.online("alice", "a1")
    bob1, bob2 = await rig.online("bob", "b1"), await rig.online("bob", "b2")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    results = await asyncio.gather(
        rig.handler.answer(bob1, call.call_id, ANSWER),
        rig.handler.answer(bob2, call.call_id, ANSWER),
        return_exceptions=True,
    )
    assert isinstance(results[0], type(call)) and results[0].state is CallState.ACTIVE
    assert isinstance(results[1], failures.FailedPrecondition)
    assert results[1].message == "call already answered"


async def test_lost_device_of_a_ringing_callee(rig: Rig) -> None:
    alice = await rig.online("alice", "a1")
    bob1, bob2 = await rig.online("bob", "b1"), await rig.online("bob", "b2")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.devices.ended("bob", bob1.session_id)
    assert (await rig.handler.get(alice, call.call_id)).state is CallState.RINGING
    await rig.devices.ended("bob", bob2.session_id)
    ended = await rig.handler.get(alice, call.call_id)
    assert (ended.state, ended.end_reason, ended.ended_by) == (
        CallState.ENDED,
        EndReason.NO_ANSWER,
        "wac",
    )


# --- The ring timeout. ------------------------------------------------------------


async def test_an_unanswered_call_ends_no_answer_at_the_ring_timeout(rig: Rig) -> None:
    alice, _ = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    assert call.create_time == EPOCH
    await rig.clock.advance(RING_TIMEOUT - TICK)
    assert await rig.state(alice, call.call_id) is CallState.RINGING
    await rig.clock.advance(TICK)
    ended = await rig.ended(alice, call.call_id)
    assert (ended.end_reason, ended.ended_by, ended.end_time) == (EndReason.NO_ANSWER, "wac", EPOCH + RING_TIMEOUT)
    assert await rig.heard("a1") == [("call_ringing", 0), ("call_ended", calls_pb2.Call.NO_ANSWER)]
    assert await rig.heard("b1") == [("call_invited", 0), ("call_ended", calls_pb2.Call.NO_ANSWER)]
    assert rig.clock.pending() == 0


async def test_an_answered_call_outlives_its_ring_timeout(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.clock.advance(RING_TIMEOUT - TICK)
    await rig.handler.answer(bob, call.call_id, ANSWER)
    assert rig.clock.pending() == 0, "the answer cancelled the ring timer"
    await rig.clock.advance(10 * RING_TIMEOUT)
    assert await rig.state(alice, call.call_id) is CallState.ACTIVE
    assert await rig.heard("a1") == [("call_ringing", 0), ("call_answered", 0)]


# --- Devices lost past the grace period. ---------------------------------------------


async def test_a_device_lost_past_the_grace_period_ends_the_active_call_failed(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.handler.answer(bob, call.call_id, ANSWER)
    await rig.devices.stream_closed("bob", "b1")
    await rig.clock.advance(GRACE - TICK)
    assert await rig.state(alice, call.call_id) is CallState.ACTIVE, "still within the grace period"
    await rig.clock.advance(TICK)
    ended = await rig.ended(alice, call.call_id)
    assert (ended.end_reason, ended.ended_by, ended.end_time) == (EndReason.FAILED, "wac", EPOCH + GRACE)
    assert (await rig.heard("a1"))[-1] == ("call_ended", calls_pb2.Call.FAILED)


async def test_a_reconnect_within_the_grace_period_keeps_the_call(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.handler.answer(bob, call.call_id, ANSWER)
    await rig.devices.stream_closed("bob", "b1")
    await rig.clock.advance(GRACE - TICK)
    await rig.devices.stream_opened("bob", "b1")
    assert rig.clock.pending() == 0, "the reconnect cancelled the grace timer"
    await rig.clock.advance(10 * GRACE)
    assert await rig.state(alice, call.call_id) is CallState.ACTIVE
    assert await rig.heard("a1") == [("call_ringing", 0), ("call_answered", 0)]


async def test_the_caller_lost_while_ringing_ends_the_call_failed(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.devices.stream_closed("alice", "a1")
    await rig.clock.advance(GRACE - TICK)
    assert await rig.state(bob, call.call_id) is CallState.RINGING
    await rig.clock.advance(TICK)
    ended = await rig.ended(bob, call.call_id)
    assert (ended.end_reason, ended.ended_by, ended.end_time) == (EndReason.FAILED, "wac", EPOCH + GRACE)
    assert await rig.heard("b1") == [("call_invited", 0), ("call_ended", calls_pb2.Call.FAILED)]


# --- The caller's event stream. ---------------------------------------------------


async def test_a_caller_without_an_event_stream_is_refused_after_the_online_wait(rig: Rig) -> None:
    await rig.online("bob", "b1")
    alice = SubscriberPrincipal("alice", "a1", PERMISSIONS, expires_at=2e9)
    create = asyncio.ensure_future(rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER))
    await rig.clock.advance(ONLINE_WAIT - TICK)
    assert not create.done()
    await rig.clock.advance(TICK)
    with pytest.raises(failures.FailedPrecondition) as refused:
        await create
    assert "no open event stream" in refused.value.message


async def test_a_caller_whose_stream_opens_within_the_online_wait_calls(rig: Rig) -> None:
    await rig.online("bob", "b1")
    alice = SubscriberPrincipal("alice", "a1", PERMISSIONS, expires_at=2e9)
    create = asyncio.ensure_future(rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER))
    await rig.clock.advance(ONLINE_WAIT - TICK)
    await rig.online("alice", "a1")
    call = await create
    assert call.state is CallState.RINGING
    assert rig.clock.pending() == 1, "only the ring timer: the online wait was given up"


# --- Deadlines across a restart. -----------------------------------------------------


async def test_a_ring_deadline_passed_while_down_ends_no_answer_at_once(rig: Rig) -> None:
    alice, _ = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.restart(down_for=RING_TIMEOUT + 1)
    await rig.online("alice", "a1")
    await rig.clock.advance(0)  # the re-armed timer is due at once
    ended = await rig.ended(alice, call.call_id)
    assert (ended.end_reason, ended.ended_by, ended.end_time) == (
        EndReason.NO_ANSWER,
        "wac",
        EPOCH + RING_TIMEOUT + 1,
    )


async def test_a_ringing_call_keeps_its_deadline_across_a_restart(rig: Rig) -> None:
    alice, _ = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.restart(down_for=20)
    await rig.online("alice", "a1")
    await rig.online("bob", "b1")
    await rig.clock.advance(RING_TIMEOUT - 20 - TICK)
    assert await rig.state(alice, call.call_id) is CallState.RINGING
    await rig.clock.advance(TICK)
    ended = await rig.ended(alice, call.call_id)
    assert (ended.end_reason, ended.end_time) == (EndReason.NO_ANSWER, EPOCH + RING_TIMEOUT)
    assert (await rig.heard("a1"))[-1] == (await rig.heard("b1"))[-1] == ("call_ended", calls_pb2.Call.NO_ANSWER)


async def test_devices_that_never_return_after_a_restart_are_lost(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.handler.answer(bob, call.call_id, ANSWER)
    await rig.restart()
    await rig.online("alice", "a1")  # bob never comes back
    await rig.clock.advance(GRACE - TICK)
    assert await rig.state(alice, call.call_id) is CallState.ACTIVE
    await rig.clock.advance(TICK)
    ended = await rig.ended(alice, call.call_id)
    assert (ended.end_reason, ended.ended_by, ended.end_time) == (EndReason.FAILED, "wac", EPOCH + GRACE)
    assert await rig.heard("a1") == [("call_ended", calls_pb2.Call.FAILED)]
