"""Personal sources: a subscriber's imported contacts are found by that
subscriber alone, on both backends, and a page token stays with its viewer."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.directory.records import DirectoryRecord
from core.directory.sources import owner_of, personal_source, visible_to
from core.directory.store import DirectoryStore
from core.failures import Invalid


def friend(i: int, name: str = "Friend") -> DirectoryRecord:
    return DirectoryRecord(str(i), f"{name} {i:02d}", (f"+3461100{i:04d}",), ())


def test_the_rule() -> None:
    assert personal_source("google", "alice") == "google:alice"
    assert (owner_of("google:alice"), owner_of("ldap:corp"), owner_of("wac")) == ("alice", "", "")
    assert visible_to("google:alice", "alice") and not visible_to("google:alice", "bob")
    assert visible_to("ldap:corp", "bob") and visible_to("wac", "bob")
    # A username that looks like a prefix is still another subscriber.
    assert not visible_to("google:alice", "ali")
    with pytest.raises(ValueError):
        personal_source("ldap", "corp")


async def test_search_leaves_out_other_subscribers_personal_entries(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("google:alice", [friend(1), friend(2)])
    await store.replace_source("google:ali", [friend(3)])
    await store.replace_source("ldap:corp", [friend(4, "Friendly")])

    async def seen_by(viewer: str | None, query: str = "friend") -> list[tuple[str, str]]:
        entries, _ = await store.search(query, page_size=50, viewer=viewer)
        return [(e.source, e.record.display_name) for e in entries]

    assert await seen_by("alice") == [
        ("google:alice", "Friend 01"),
        ("google:alice", "Friend 02"),
        ("ldap:corp", "Friendly 04"),
    ]
    assert await seen_by("bob") == [("ldap:corp", "Friendly 04")]
    assert await seen_by("bob", "+34 611 000 001") == []
    assert len(await seen_by(None)) == 4  # no viewer: the operator's view, everything


async def test_a_page_token_stays_with_its_viewer(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("google:alice", [friend(i) for i in range(5)])
    first, token = await store.search("friend", page_size=2, viewer="alice")
    assert len(first) == 2 and token
    second, _ = await store.search("friend", page_size=2, page_token=token, viewer="alice")
    assert [e.record.entry_id for e in second] == ["2", "3"]
    with pytest.raises(Invalid) as other:
        await store.search("friend", page_size=2, page_token=token, viewer="bob")
    assert other.value.field == "page_token"
