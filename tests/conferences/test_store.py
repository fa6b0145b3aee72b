"""The conferences store, on tables made by the 0006 migration, on SQLite
and on PostgreSQL (a fresh database per test): the migration gives exactly
the tables the code declares, and every unit of work reads back what it
wrote."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect

from core import failures
from core.conferences import rules
from core.conferences.rules import Conference, EndReason, Media, Participant, State
from core.conferences.store import ConferenceStore
from core.db.engine import create_engine, sync_url
from core.db.migrate import alembic_config, upgrade
from core.db.tables import metadata
from core.db.work import dispose
from settings.config import sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(url: str) -> AsyncIterator[ConferenceStore]:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    try:
        yield ConferenceStore(engine)
    finally:
        await dispose(engine)


def conference(conference_id: str, creator: str, when: float, *invitees: str) -> Conference:
    return Conference(
        conference_id=conference_id,
        title=f"about {conference_id}",
        creator=creator,
        media=Media.AUDIO_VIDEO,
        invitees=invitees,
        participants=(),
        state=State.ACTIVE,
        room=(1 << 53) - 1,
        create_time=when,
    )


def _schema_differences(url: str) -> list[object]:
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_sync_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migration_makes_the_declared_tables_and_goes_back(url: str) -> None:
    from alembic import command

    upgrade(url, "0005")
    assert not {"conferences", "conference_members"} & _tables(url)
    upgrade(url)
    assert _schema_differences(url) == []
    command.downgrade(alembic_config(url), "0005")
    assert not {"conferences", "conference_members"} & _tables(url)
    upgrade(url)
    assert _schema_differences(url) == []


async def test_a_conference_round_trips_through_its_changes(store: ConferenceStore) -> None:
    made = conference("k1", "alice", 100.0, "bob")
    await store.create(made)
    assert await store.get("k1") == made
    assert await store.get("nope") is None

    def draw() -> int:
        return 42

    before, after = await store.change("k1", lambda c: rules.join(c, "bob", "bob-web", 101.0, draw, "secret"))
    assert before == made
    assert after.participants == (Participant("bob", "bob-web", 42, 101.0, "secret"),)
    _, after = await store.change("k1", lambda c: rules.invite(c, "alice", ["carol", "bob", "dave"]))
    _, after = await store.change("k1", lambda c: rules.join(c, "alice", "alice-web", 102.0, lambda: 7))
    assert await store.get("k1") == after
    assert after.invitees == ("bob", "carol", "dave")
    assert [p.username for p in after.participants] == ["bob", "alice"]
    assert sorted(await store.rooms_of(["bob-web", "alice-web", "other"])) == [
        ("k1", "alice", "alice-web"),
        ("k1", "bob", "bob-web"),
    ]
    assert len(await store.present()) == 2

    # A refused step changes nothing.
    with pytest.raises(failures.PermissionDenied):
        await store.change("k1", lambda c: rules.join(c, "mallory", "m-web", 103.0, draw))
    with pytest.raises(failures.PermissionDenied, match=rules.NOT_INVITED):
        await store.change("nope", lambda c: rules.join(c, "alice", "a-web", 103.0, draw))
    assert await store.get("k1") == after

    _, ended = await store.change(
        "k1", lambda c: rules.end(rules.may_end(c, "k1", "alice"), "alice", 110.0, EndReason.CREATOR)
    )
    assert await store.get("k1") == ended
    assert (ended.state, ended.participants, ended.end_time, ended.ended_by) == (State.ENDED, (), 110.0, "alice")
    assert await store.rooms_of(["bob-web", "alice-web"]) == [] and await store.present() == []


async def test_listings_page_active_first_then_newest(store: ConferenceStore) -> None:
    for n in range(5):
        await store.create(conference(f"k{n}", "alice" if n % 2 == 0 else "bob", 100.0 + n, "carol"))
    await store.change("k3", lambda c: rules.end(c, "bob", 200.0, EndReason.CREATOR))
    await store.change("k4", lambda c: rules.end(c, "alice", 200.0, EndReason.CREATOR))
    assert await store.active_created_by("alice") == 2

    seen: list[str] = []
    position: tuple[bool, float, str] | None = None
    while True:
        page = await store.list_for_member("carol", before=position, limit=2)
        seen += [c.conference_id for c in page]
        if len(page) < 2:
            break
        last = page[-1]
        position = (last.state is State.ACTIVE, last.create_time, last.conference_id)
    assert seen == ["k2", "k1", "k0", "k4", "k3"]
    assert [c.conference_id for c in await store.list_for_member("alice", before=None, limit=10)] == [
        "k2",
        "k0",
        "k4",
    ]

    first = await store.list_active(before=None, limit=2)
    assert [c.conference_id for c in first] == ["k2", "k1"]
    rest = await store.list_active(before=(first[-1].create_time, first[-1].conference_id), limit=2)
    assert [c.conference_id for c in rest] == ["k0"]
    assert dataclasses.replace(rest[0], invitees=()) == dataclasses.replace(
        conference("k0", "alice", 100.0), invitees=()
    )


async def test_the_history_pages_newest_first_and_keeps_who_entered(store: ConferenceStore) -> None:
    for n in range(4):
        await store.create(
            dataclasses.replace(conference(f"h{n}", "alice", 100.0 + n, "bob", "carol"), idle_since=100.0 + n)
        )
    await store.create(dataclasses.replace(conference("other", "dave", 150.0, "erin"), idle_since=150.0))
    _, joined = await store.change("h1", lambda c: rules.join(c, "carol", "carol-web", 120.0, lambda: 1))
    assert joined.idle_since is None
    await store.change("h1", lambda c: rules.join(c, "bob", "bob-web", 121.0, lambda: 2))
    await store.change("h1", lambda c: rules.leave(c, "carol", now=130.0))
    _, empty = await store.change("h1", lambda c: rules.leave(c, "bob", now=131.0))
    assert await store.get("h1") == empty
    assert (empty.attendees, empty.first_join_time, empty.idle_since) == (("carol", "bob"), 120.0, 131.0)
    await store.change("h2", lambda c: rules.end(c, "ops-key", 140.0, EndReason.OPERATOR))
    assert (await store.get("h2")).end_reason is EndReason.OPERATOR  # type: ignore[union-attr]

    seen: list[str] = []
    position: tuple[float, str] | None = None
    while True:
        page = await store.history("bob", state=None, before=position, limit=2)
        seen += [c.conference_id for c in page]
        if len(page) < 2:
            break
        position = (page[-1].create_time, page[-1].conference_id)
    assert seen == ["h3", "h2", "h1", "h0"]
    assert [c.conference_id for c in await store.history("bob", state=State.ENDED, before=None, limit=10)] == ["h2"]
    assert [c.conference_id for c in await store.history(None, state=None, before=None, limit=3)] == [
        "other",
        "h3",
        "h2",
    ]
    assert [c.conference_id for c in await store.history(None, state=State.ACTIVE, before=(103.0, "h3"), limit=9)] == [
        "h1",
        "h0",
    ]
    assert await store.history("mallory", state=None, before=None, limit=10) == []

    # Idle since 131 (h1), since their creation (h0, h3, other); h2 ended.
    assert sorted(await store.idle(131.0)) == ["h0", "h1", "h3"]
    assert sorted(await store.idle(102.9)) == ["h0"]


def test_the_0007_migration_gives_existing_conferences_their_history(url: str) -> None:
    """Conferences stored before 0007: an active one with nobody in its room
    is idle from its creation, an ended one says who ended it, a member in
    the room has entered it."""
    from sqlalchemy import text

    upgrade(url, "0006")
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            for cid, state, ended_by in (("empty", "ACTIVE", None), ("busy", "ACTIVE", None), ("ops", "ENDED", "key")):
                conn.execute(
                    text(
                        "INSERT INTO conferences (conference_id, title, creator, media, state, room,"
                        " create_time, ended_by) VALUES (:cid, 't', 'alice', 'AUDIO', :state, 1, 10.0, :ended_by)"
                    ),
                    {"cid": cid, "state": state, "ended_by": ended_by},
                )
            conn.execute(
                text(
                    "INSERT INTO conference_members (conference_id, username, position, create_time, active,"
                    " session_id, feed_id, join_time) VALUES ('busy', 'alice', 0, 10.0, true, 's', 1, 12.0)"
                )
            )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT conference_id, idle_since, end_reason FROM conferences")).all()
            joined = conn.execute(text("SELECT first_join_time FROM conference_members")).scalar_one()
    finally:
        engine.dispose()
    assert sorted(tuple(r) for r in rows) == [("busy", None, None), ("empty", 10.0, None), ("ops", None, "OPERATOR")]
    assert joined == 12.0
