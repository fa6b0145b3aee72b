"""DirectoryStore: full and incremental writes, search ranking and paging."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.directory.records import Checkpoint, Counts, DirectoryRecord, RunState
from core.directory.store import DirectoryStore
from core.failures import Invalid


def person(entry_id: str, name: str, phone: str = "", email: str = "") -> DirectoryRecord:
    return DirectoryRecord(
        entry_id=entry_id,
        display_name=name,
        phone_numbers=(phone,) if phone else (),
        emails=(email,) if email else (),
    )


ANA = person("1", "Ana García", "+34612345678", "ana@example.org")
BOB = person("2", "Bob Anders", "+34911234567", "bob@example.org")
CARL = person("3", "Carl Ana", "+442079460000", "carl@example.co.uk")
ANABEL = person("4", "Anabel Smith", "+34633333333")


async def names(store: DirectoryStore, query: str, **kwargs: object) -> list[str]:
    entries, _ = await store.search(query, **kwargs)  # type: ignore[arg-type]
    return [e.record.display_name for e in entries]


async def test_replace_source_counts_and_is_idempotent(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    assert await store.replace_source("ldap:corp", [ANA, BOB]) == Counts(added=2)
    assert await store.replace_source("ldap:corp", [ANA, BOB]) == Counts()
    changed = person("2", "Bob Anders", "+34911234568", "bob@example.org")
    assert await store.replace_source("ldap:corp", [ANA, changed, CARL]) == Counts(added=1, updated=1)
    assert await store.replace_source("ldap:corp", [CARL]) == Counts(removed=2)
    assert await store.count("ldap:corp") == 1


async def test_sources_are_apart(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("ldap:corp", [ANA])
    await store.upsert_entry("wac", person("alice", "Alice", email="alice@wac.test"))
    assert await store.replace_source("ldap:corp", []) == Counts(removed=1)
    assert await store.count() == 1
    assert await store.delete_entry("wac", "alice") is True
    assert await store.delete_entry("wac", "alice") is False


async def test_apply_changes(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("google:ana", [ANA, BOB])
    moved = person("1", "Ana García", "+34699999999")
    counts = await store.apply_changes("google:ana", [moved, BOB, CARL], ["2", "404"])
    # BOB is both upserted and deleted: the upsert wins, and it is unchanged.
    assert counts == Counts(added=1, updated=1, removed=0)
    counts = await store.apply_changes("google:ana", [], ["2", "404"])
    assert counts == Counts(removed=1)
    stored = await store.get_entry("google:ana", "1")
    assert stored is not None and stored.record.phone_numbers == ("+34699999999",)


async def test_failed_write_changes_nothing(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("ldap:corp", [ANA, BOB])
    # Not E.164: deriving its search keys fails after the rows are written.
    broken = person("9", "Broken", "not a number")
    with pytest.raises(ValueError):
        await store.replace_source("ldap:corp", [CARL, broken], checkpoint=Checkpoint("corp", {"n": 1}, True))
    assert sorted(await names(store, "a")) == ["Ana García", "Bob Anders"]
    assert await store.count("ldap:corp") == 2
    assert await store.get_cursor("corp") is None


async def test_search_by_name_email_phone(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("ldap:corp", [ANA, BOB, CARL, ANABEL])
    # "ana" is a word of two names and a prefix of a third: exact ones first.
    assert await names(store, "ana") == ["Ana García", "Carl Ana", "Anabel Smith"]
    assert await names(store, "an") == ["Ana García", "Anabel Smith", "Bob Anders", "Carl Ana"]
    assert await names(store, "carl ana") == ["Carl Ana"]
    assert await names(store, "GARC") == ["Ana García"]
    assert await names(store, "garcia") == ["Ana García"]  # accents fold
    assert await names(store, "bob@ex") == ["Bob Anders"]
    assert await names(store, "612 34") == ["Ana García"]
    assert await names(store, "+34 612 345 678") == ["Ana García"]
    assert await names(store, "0034612") == ["Ana García"]
    assert await names(store, "34911") == ["Bob Anders"]
    # A national form with a trunk prefix is read in the searcher's region.
    assert await names(store, "020 7946", default_region="GB") == ["Carl Ana"]
    assert await names(store, "020 7946") == []
    assert await names(store, "zzz") == []


async def test_an_address_with_accents_is_found_by_its_own_prefix(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    await store.replace_source("ldap:corp", [person("5", "José Núñez", email="José.Núñez@Empresa.es")])
    # Typed as stored, or without the accents: the query is folded, and so is the key.
    assert await names(store, "josé.nú") == ["José Núñez"]
    assert await names(store, "JOSE.NUNEZ@EMPRESA.ES") == ["José Núñez"]


async def test_search_pages(engine: AsyncEngine) -> None:
    store = DirectoryStore(engine)
    people = [person(str(i), f"Person {i:03d}", f"+3461200{i:04d}") for i in range(25)]
    await store.replace_source("ldap:corp", people)
    seen: list[str] = []
    token = ""
    while True:
        entries, token = await store.search("person", page_size=10, page_token=token)
        seen += [e.record.display_name for e in entries]
        if not token:
            break
    assert seen == [p.display_name for p in people]
    with pytest.raises(Invalid, match="page_token"):
        await store.search("other", page_size=10, page_token=(await store.search("p", 1))[1])
    with pytest.raises(Invalid, match="page_token"):
        await store.search("p", page_size=10, page_token="not a token")


async def test_search_uses_the_key_index(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.connect() as conn:
        plan = await conn.execute(
            text("EXPLAIN QUERY PLAN SELECT entry_row_id FROM directory_keys WHERE key >= 'ab' AND key < 'ac'")
        )
        detail = " ".join(str(row[-1]) for row in plan)
    assert "ix_directory_keys_key" in detail or "USING COVERING INDEX" in detail


async def test_runs_and_cursor(engine: AsyncEngine) -> None:
    now = [100.0]
    store = DirectoryStore(engine, clock=lambda: now[0])
    run = await store.start_run("corp", full=True)
    assert run.state is RunState.RUNNING and run.start_time == 100.0
    now[0] = 101.0
    await store.replace_source("ldap:corp", [ANA], checkpoint=Checkpoint("corp", {"ts": "x"}, full=True))
    now[0] = 102.5
    done = await store.finish_run(run.run_id, state=RunState.SUCCEEDED, counts=Counts(added=1))
    assert done.added == 1 and done.duration == 2.5
    assert await store.last_run("corp") == done
    state = await store.connector_state("corp")
    assert state.cursor == {"ts": "x"} and state.last_full_time == 101.0
    await store.start_run("corp", full=False)
    assert await store.fail_interrupted_runs() == 1
    last = await store.last_run("corp")
    assert last is not None and last.state is RunState.FAILED and "interrupted" in last.error


async def test_values_too_long_or_with_nul_are_stored_alike_on_both_backends(engine: AsyncEngine) -> None:
    # PostgreSQL refuses what SQLite kept: a 300-character name failed a whole sync there.
    store = DirectoryStore(engine)
    odd = DirectoryRecord(
        entry_id="x" * 300,
        display_name="Ana\x00 " + "A" * 300,
        phone_numbers=("+34612345678",),
        emails=("ana\x00@example.org",),
        department="Sales\x00",
    )
    assert await store.replace_source("ldap:corp", [odd]) == Counts(added=1)
    stored = await store.get_entry("ldap:corp", "x" * 300)
    assert stored is not None
    assert stored.record.display_name == ("Ana " + "A" * 300)[:255]
    assert (stored.record.department, stored.record.emails) == ("Sales", ("ana@example.org",))
    assert await names(store, "ana") == [stored.record.display_name]
    assert await store.apply_changes("ldap:corp", [], ["x" * 300]) == Counts(removed=1)
