"""Conferences in the call history (ListCalls), and conferences that end
by themselves when their room stays empty ([conferences] idle_timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.support import eventually
from tests.conferences.conftest import ICE
from tests.conferences.support import Conference, Conferences, open_conferences
from wac.v1 import calls_pb2

Call = calls_pb2.Call
# A short [conferences] idle_timeout: the idle sweep runs every quarter of it.
IDLE = 40.0


@pytest.fixture
async def short_idle(tmp_path: Path) -> AsyncIterator[Conferences]:
    async with open_conferences(tmp_path, {**ICE, "WAC_CONFERENCES_IDLE_TIMEOUT": str(IDLE)}) as running:
        yield running


async def history(device: Any, **fields: Any) -> list[calls_pb2.Call]:
    return list((await device.list(**fields)).calls)


async def test_a_conference_is_one_entry_of_its_members_call_history(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    carol = await conferences.member("carol")
    call = await alice.create("carol")
    await conferences.advance(1)
    made = await alice.open("bob", title="Weekly")
    await conferences.advance(1)

    # Open, nobody in the room yet: ACTIVE, after the call before it.
    entry, older = await history(alice)
    assert older.call_id == call.call_id
    assert (entry.call_id, entry.via, entry.state, entry.caller, entry.callee) == (
        made.conference_id,
        Call.CONFERENCE,
        Call.ACTIVE,
        "alice",
        "",
    )
    assert (entry.media.audio, entry.media.video) == (True, True)
    assert entry.conference.title == "Weekly" and list(entry.conference.invitees) == ["bob"]
    assert not entry.conference.attendees and not entry.HasField("answer_time")
    assert await history(bob) == [entry]
    # Not a member, not in its history.
    assert [c.call_id for c in await history(carol)] == [call.call_id]

    await bob.join(made.conference_id)
    await conferences.advance(5)
    await alice.join(made.conference_id)
    await conferences.advance(60)
    await bob.leave(made.conference_id)
    ended = await alice.end(made.conference_id)

    [entry] = await history(bob)
    assert (entry.state, entry.end_reason, entry.ended_by) == (Call.ENDED, Call.COMPLETED, "alice")
    assert list(entry.conference.attendees) == ["bob", "alice"]
    assert entry.end_time == ended.end_time
    # From the first entrance to the end: how long the room was in use.
    assert entry.duration.ToTimedelta().total_seconds() == 65
    assert entry.answer_time.ToSeconds() == entry.end_time.ToSeconds() - 65

    # The state filter (the call rang out meanwhile); a conference never rings.
    assert [c.call_id for c in await history(alice, state=Call.ENDED)] == [made.conference_id, call.call_id]
    assert await history(alice, state=Call.ACTIVE) == []
    await alice.open("bob")
    assert await history(alice, state=Call.RINGING) == []
    assert len(await history(alice, state=Call.ACTIVE)) == 1


async def test_calls_and_conferences_page_together_newest_first(conferences: Conferences) -> None:
    alice = await conferences.member("alice")
    await conferences.member("bob")
    await conferences.member("carol")
    made: list[str] = []
    for n in range(3):
        made.append((await alice.create("carol")).call_id)
        await conferences.advance(1)
        made.append((await alice.open("bob", title=f"c{n}")).conference_id)
        await conferences.advance(1)
    await alice.create("bob")  # same instant as nothing else: the newest

    everything = [c.call_id for c in await history(alice, page_size=100)]
    assert everything[1:] == made[::-1]
    walked: list[str] = []
    token = ""
    while True:
        page = await alice.list(page_size=2, page_token=token)
        walked += [c.call_id for c in page.calls]
        token = page.next_page_token
        if not token:
            break
    assert walked == everything

    # An operator reads everyone's history, conferences too.
    operator = await conferences.world.service("ops", "calls.read")
    request = calls_pb2.ListCallsRequest(subscriber="bob")
    for_bob = (await operator.calls.ListCalls(request, metadata=operator.metadata)).calls
    assert [c.call_id for c in for_bob] == [everything[0], *made[::-2]]
    request = calls_pb2.ListCallsRequest(page_size=1000)
    assert len((await operator.calls.ListCalls(request, metadata=operator.metadata)).calls) == 7


async def test_an_operator_end_and_an_unattended_conference_say_so(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    operator = await conferences.operator("conferences.write")
    attended = await alice.open("bob")
    await bob.join(attended.conference_id)
    await operator.end(attended.conference_id)
    await conferences.advance(1)
    unattended = await alice.open("bob")
    await alice.end(unattended.conference_id)
    first, second = await history(alice)
    assert (first.call_id, first.end_reason, first.ended_by) == (unattended.conference_id, Call.NO_ANSWER, "alice")
    assert (second.call_id, second.end_reason, second.ended_by) == (
        attended.conference_id,
        Call.OPERATOR,
        operator.name,
    )


async def test_a_room_nobody_enters_ends_after_the_idle_timeout(short_idle: Conferences) -> None:
    conferences = short_idle
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    made = await alice.open("bob")
    await bob.expect("conference_invited")
    await conferences.advance(IDLE - 1)
    assert (await alice.mine()).conferences[0].state == Conference.ACTIVE
    await bob.quiet()

    # Within one sweep period past the timeout (a quarter of it, at most a minute).
    await conferences.advance(IDLE / 4)
    for member in (alice, bob):
        (told,) = await member.expect("conference_ended")
        assert (told.conference.state, told.conference.ended_by) == (Conference.ENDED, "wac")
    [(room, (conference_id, _))] = conferences.recorded.rooms.items()
    assert conference_id == made.conference_id and conferences.recorded.destroyed == [room]
    [entry] = await history(alice)
    assert (entry.end_reason, entry.ended_by) == (Call.NO_ANSWER, "wac")


async def test_the_idle_timeout_counts_from_the_last_leave_and_never_with_someone_in(short_idle: Conferences) -> None:
    conferences = short_idle
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    bridge = conferences.recorded
    busy = await alice.open("bob", title="busy")
    emptied = await alice.open("bob", title="emptied")
    await bob.join(busy.conference_id)
    await bob.join(emptied.conference_id)  # his place in "busy" stays: one room per conference
    await conferences.advance(IDLE - 5)
    await bob.leave(emptied.conference_id)

    # "emptied" is idle from the leave on: not yet ended at its creation's timeout.
    await conferences.advance(IDLE / 4)
    assert {c.title: c.state for c in (await alice.mine()).conferences} == {
        "busy": Conference.ACTIVE,
        "emptied": Conference.ACTIVE,
    }
    await conferences.advance(IDLE)
    ended = await eventually(lambda: _ended_titles(alice))
    assert ended == {"emptied"}
    [room] = [room for room, (cid, _) in bridge.rooms.items() if cid == emptied.conference_id]
    assert room in bridge.destroyed
    # With Bob in its room, "busy" stays open however long.
    await conferences.advance(10 * IDLE)
    operator = await conferences.operator("conferences.read")
    assert [c.title for c in (await operator.list()).conferences] == ["busy"]
    service = await conferences.world.service("history", "calls.read")
    request = calls_pb2.ListCallsRequest(subscriber="alice")
    listed = (await service.calls.ListCalls(request, metadata=service.metadata)).calls
    entry = next(c for c in listed if c.call_id == emptied.conference_id)
    assert (entry.end_reason, entry.ended_by, list(entry.conference.attendees)) == (Call.COMPLETED, "wac", ["bob"])


async def _ended_titles(member: Any) -> set[str]:
    return {c.title for c in (await member.mine()).conferences if c.state == Conference.ENDED}
