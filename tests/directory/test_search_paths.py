"""DirectoryStore.search reads a page in one of several ways, by how many
entries match (``core.directory.search``). Whichever it takes, a user sees
the same entries in the same order, page after page, without gaps or
repeats; and each way reads an index rather than sorting the directory."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.directory import search
from core.directory.keys import entry_keys, fold, query_keys
from core.directory.records import DirectoryRecord
from core.directory.sources import visible_to
from core.directory.store import DirectoryStore

GIVEN = ["Ana", "Anabel", "Marta", "Mario", "Marín", "José", "Carl", "Bob"]
FAMILY = ["Ana", "Martín", "García", "Anders", "Marín", "Smith"]
SOURCES = ["ldap:corp", "google:alice", "google:bob"]


def directory() -> dict[str, list[DirectoryRecord]]:
    """Names that share their first letters, exact words that are also
    prefixes of others, same display names twice, personal sources."""
    by_source: dict[str, list[DirectoryRecord]] = {source: [] for source in SOURCES}
    n = 0
    for given in GIVEN:
        for family in FAMILY:
            n += 1
            name = f"{given} {family}"
            email = f"{fold(given)}.{fold(family)}{n}@example.org"
            record = DirectoryRecord(str(n), name, (f"+3461{n % 7}00{n:04d}",), (email,))
            by_source[SOURCES[n % 3]].append(record)
    # The same name as another entry: ordered after it by row id.
    by_source["ldap:corp"].append(DirectoryRecord("twin", "Ana Ana", ("+34699000000",), ()))
    return by_source


def expected(by_source: dict[str, list[DirectoryRecord]], query: str, viewer: str | None) -> list[str]:
    """The contract, spelled out: exact matches, then prefix matches, each
    in display-name order, then in the order the entries were written."""
    wanted = query_keys(query, "ES")
    ranked: list[tuple[int, str, int, str]] = []
    order = 0
    for source, records in by_source.items():
        for record in records:
            order += 1
            if viewer is not None and not visible_to(source, viewer):
                continue
            keys = entry_keys(record.display_name, record.emails, record.phone_numbers)
            if any(q in keys for q in wanted):
                rank = 0
            elif any(key.startswith(q) for key in keys for q in wanted):
                rank = 1
            else:
                continue
            ranked.append((rank, fold(record.display_name), order, f"{source}/{record.entry_id}"))
    return [found for *_, found in sorted(ranked)]


async def every_page(store: DirectoryStore, query: str, size: int, viewer: str | None) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        entries, token = await store.search(query, page_size=size, page_token=token, viewer=viewer)
        seen += [f"{e.source}/{e.record.entry_id}" for e in entries]
        if not token:
            return seen
        assert len(entries) == size  # only the last page is short


QUERIES = ["a", "an", "ana", "anab", "m", "mar", "mart", "marin", "ana ana", "jose.", "6", "+34", "612", "34612", "zz"]


@pytest.mark.parametrize("narrow", [0, 10**6], ids=["read in order", "sorted"])
async def test_pages_are_the_same_whichever_way_they_are_read(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, narrow: int
) -> None:
    monkeypatch.setattr(search, "NARROW", narrow)
    store = DirectoryStore(engine)
    by_source = directory()
    for source, records in by_source.items():
        await store.replace_source(source, records)
    for query in QUERIES:
        for viewer in ("alice", None):
            want = expected(by_source, query, viewer)
            for size in (1, 3, 50):
                assert await every_page(store, query, size, viewer) == want, (query, viewer, size)
    assert expected(by_source, "mar", "alice")  # the data does exercise the paths


async def test_exact_matches_come_first_then_by_display_name(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("ldap:corp", directory()["ldap:corp"])
    entries, _ = await store.search("ana", page_size=100)
    names = [e.record.display_name for e in entries]
    exact = [n for n in names if "ana" in fold(n).split()]
    assert names[: len(exact)] == sorted(exact, key=fold) and exact
    assert names[len(exact) :] == sorted(names[len(exact) :], key=fold)
    assert all(n.startswith("Anabel") for n in names[len(exact) :])


def _plan_of(engine: AsyncEngine, stmt: Any, keys: tuple[str, ...], position: Any, viewer: str | None) -> str:
    bound = stmt.params(search.parameters(keys, position, 21, viewer))
    sql = bound.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    return f"EXPLAIN QUERY PLAN {sql}"


AFTER = ("ana x", 3)


@pytest.mark.parametrize(
    ("stmt", "keys", "position", "viewer", "index"),
    [
        (search.exact_statement(1, True, True), ("ana",), AFTER, "bob", "ix_directory_keys_key"),
        (search.count_statement(2), ("an", "6"), None, None, "ix_directory_keys_key"),
        (search.prefix_statement(("sorted",), False, True), ("anab",), None, "bob", "ix_directory_keys_key"),
        (search.prefix_statement(("prefixes",), True, True), ("an",), AFTER, "bob", "ix_directory_key_prefixes"),
        (search.prefix_statement(("prefixes, checked",), False, False), ("anab",), None, None, "ix_directory_key_p"),
        (search.prefix_statement(("entries",), False, True), ("+346",), None, "bob", "ix_directory_entries_sort"),
    ],
    ids=["exact", "count", "sorted", "prefixes", "prefixes, checked", "entries"],
)
async def test_each_way_reads_an_index(
    sqlite_engine: AsyncEngine, stmt: Any, keys: tuple[str, ...], position: Any, viewer: str | None, index: str
) -> None:
    engine = sqlite_engine  # the plan is checked on SQLite, whose planner is the embedded default
    async with engine.connect() as conn:
        plan = [str(row[-1]) for row in await conn.execute(text(_plan_of(engine, stmt, keys, position, viewer)))]
    reads = [step for step in plan if step.startswith(("SEARCH", "SCAN directory_"))]
    assert index in reads[0], plan
    # No table is read whole: the walk follows an index, every other read is
    # a probe of a key, one row (or a few) at a time.
    assert all("USING" in step for step in reads), plan
    assert all(step.startswith("SEARCH") for step in reads[1:]), plan


async def test_a_way_that_reads_in_order_does_not_sort(sqlite_engine: AsyncEngine) -> None:
    engine = sqlite_engine  # the plan is checked on SQLite, whose planner is the embedded default
    for stmt, keys, viewer in [
        (search.exact_statement(2, True, True), ("34611", "+34611"), "bob"),
        (search.prefix_statement(("prefixes", "entries"), True, True), ("an", "6"), "bob"),
        (search.prefix_statement(("prefixes, checked",), True, False), ("anab",), None),
    ]:
        async with engine.connect() as conn:
            plan = [str(row[-1]) for row in await conn.execute(text(_plan_of(engine, stmt, keys, AFTER, viewer)))]
        # In index order: a page costs its own rows, not every match's.
        assert not [step for step in plan if "TEMP B-TREE" in step], plan
