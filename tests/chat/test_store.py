"""The chat tables from the 0008 migration, on SQLite and on PostgreSQL:
the migration gives exactly the tables the code declares and goes back;
concurrent sends to one conversation take consecutive seqs, and racing
retries of one send make one message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect

from core.db.engine import sync_url
from core.db.migrate import alembic_config, upgrade
from settings.config import sqlite_url
from tests.chat.support import Chat, open_chat
from tests.conferences.test_store import _schema_differences

CHAT_TABLES = {"conversations", "conversation_members", "messages", "message_blocks"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _tables(url: str) -> set[str]:
    engine = create_sync_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migration_makes_the_declared_tables_and_goes_back(url: str) -> None:
    upgrade(url, "0007")
    assert not CHAT_TABLES & _tables(url)
    upgrade(url)
    assert _schema_differences(url) == []
    command.downgrade(alembic_config(url), "0007")
    assert not CHAT_TABLES & _tables(url)
    upgrade(url)
    assert _schema_differences(url) == []


async def test_concurrent_sends_take_consecutive_seqs_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with open_chat(tmp_path, {"WAC_CORE_DATABASE_URL": postgres_url}) as chat:
        await _concurrent_sends(chat)


async def test_concurrent_sends_take_consecutive_seqs_on_sqlite(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        await _concurrent_sends(chat)


async def _concurrent_sends(chat: Chat) -> None:
    alice, bob = await chat.device("alice"), await chat.device("bob")
    group = await alice.group("Team", "bob")
    sent = await asyncio.gather(
        *(d.send(f"{d.username}{n}", conversation_id=group.conversation_id) for n in range(10) for d in (alice, bob))
    )
    assert sorted(m.seq for m in sent) == list(range(1, 21))
    # The same send racing itself (a retry before the first answer) makes one message.
    twins = await asyncio.gather(*(alice.send("once", to="bob", key="same-key") for _ in range(5)))
    assert len({m.message_id for m in twins}) == 1
    assert await bob.texts(twins[0].conversation_id) == ["once"]
