"""The calls handler without a server: in-call presence hooks and races,
on a real SQLite store, the in-memory event log and device registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core import errors
from core.auth.principal import SubscriberPrincipal
from core.calls.handler import CallHandler
from core.calls.incall import InCall
from core.calls.machine import CallState, DescriptionType, EndReason, Media, SessionDescription
from core.calls.store import CallStore
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.events.devices import MemoryDeviceRegistry
from core.events.memory import MemoryEventLog
from settings.config import CallsConfig, IceConfig, sqlite_url
from tests.calls.support import SDP, eventually

OFFER = SessionDescription(DescriptionType.OFFER, SDP)
ANSWER = SessionDescription(DescriptionType.ANSWER, SDP)
PERMISSIONS = frozenset({"call.audio", "call.video"})


@dataclass(frozen=True)
class Person:
    display_name: str


class People:
    async def get_subscriber(self, username: str) -> Person | None:
        return Person(username.title()) if username in {"alice", "bob", "carol"} else None


@dataclass
class Rig:
    handler: CallHandler
    devices: MemoryDeviceRegistry
    events: MemoryEventLog
    in_call: list[tuple[str, bool]] = field(default_factory=list)

    async def online(self, username: str, session_id: str) -> SubscriberPrincipal:
        await self.events.open(session_id, username)
        await self.devices.stream_opened(username, session_id)
        return SubscriberPrincipal(username, session_id, PERMISSIONS, expires_at=2e9)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    events = MemoryEventLog()
    devices = MemoryDeviceRegistry(grace_period=0.05)
    rig_ = Rig(handler=None, devices=devices, events=events)  # type: ignore[arg-type]

    async def on_call_state(username: str, in_call: bool) -> None:
        rig_.in_call.append((username, in_call))

    rig_.handler = CallHandler(
        store=CallStore(engine),
        events=events,
        devices=devices,
        subscribers=People(),
        config=CallsConfig(),
        ice_config=IceConfig(),
        device_grace=0.05,
        in_call=InCall(on_call_state),
    )
    await rig_.handler.start()
    try:
        yield rig_
    finally:
        await rig_.handler.stop()
        await dispose(engine)


async def test_in_call_presence_follows_active_calls(rig: Rig) -> None:
    alice, bob, carol = (
        await rig.online("alice", "a1"),
        await rig.online("bob", "b1"),
        await rig.online("carol", "c1"),
    )
    calls = rig.handler
    first = await calls.create(alice, callee="bob", media=Media(), offer=OFFER)
    await asyncio.sleep(0.05)
    assert rig.in_call == []  # ringing is not in a call
    await calls.answer(bob, first.call_id, ANSWER)
    await eventually(lambda: rig.in_call == [("alice", True), ("bob", True)])

    # Bob was in a call already: presence hears only about carol.
    second = await calls.create(carol, callee="bob", media=Media(), offer=OFFER)
    await calls.answer(bob, second.call_id, ANSWER)
    await eventually(lambda: rig.in_call[2:] == [("carol", True)])

    # Bob is still in the second call when the first ends.
    await calls.hangup(alice, first.call_id)
    await eventually(lambda: rig.in_call[3:] == [("alice", False)])
    await calls.hangup(bob, second.call_id)
    await eventually(lambda: sorted(rig.in_call[4:]) == [("bob", False), ("carol", False)])


async def test_a_call_that_never_became_active_leaves_presence_alone(rig: Rig) -> None:
    alice, bob = await rig.online("alice", "a1"), await rig.online("bob", "b1")
    call = await rig.handler.create(alice, callee="bob", media=Media(), offer=OFFER)
    await rig.handler.reject(bob, call.call_id, busy=False)
    await asyncio.sleep(0.05)
    assert rig.in_call == []


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
    assert isinstance(results[1], errors.ApiError)
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
