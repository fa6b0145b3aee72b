"""The LDAP connector against a real slapd: full, incremental and failing runs."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import ldap3
import pytest

from connectors.ldap import LdapConnector
from core.directory.records import RunState
from core.directory.runner import SyncRunner
from core.directory.store import DirectoryStore
from settings.connectors import LdapConfig, parse_connector
from tests.support.slapd import PEOPLE_DN, READER_DN, READER_PASSWORD, SUFFIX, Slapd

USABLE, SKIPPED = 12, 2


def ldap_config(server: Slapd, **overrides: object) -> LdapConfig:
    table = {
        "type": "ldap",
        "urls": [server.url],
        "bind_dn": READER_DN,
        "bind_password": READER_PASSWORD,
        "base_dn": SUFFIX,
        "default_region": "ES",
        **overrides,
    }
    config = parse_connector("corp", table)
    assert isinstance(config, LdapConfig)
    return config


def runner_for(store: DirectoryStore, config: LdapConfig) -> SyncRunner:
    return SyncRunner(store, [LdapConnector(config)])


async def names(store: DirectoryStore, query: str, region: str = "ES") -> list[str]:
    entries, _ = await store.search(query, page_size=50, default_region=region)
    return [e.record.display_name for e in entries]


def set_phone(server: Slapd, uid: str, number: str) -> None:
    server.ldapmodify(
        f"dn: uid={uid},{PEOPLE_DN}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: {number}\n"
    )


async def test_full_sync(slapd: Slapd, store: DirectoryStore) -> None:
    run = await runner_for(store, ldap_config(slapd)).run("corp")
    assert run.state is RunState.SUCCEEDED, run.error
    assert (run.full, run.added, run.updated, run.removed) == (True, USABLE, 0, 0)
    assert run.skipped == SKIPPED
    assert await store.count("ldap:corp") == USABLE
    entries, _ = await store.search("ana garc", page_size=5)
    [ana] = entries
    assert ana.source == "ldap:corp"
    assert ana.record.phone_numbers == ("+34612345678",)
    assert ana.record.emails == ("ana.garcia@example.org",)
    assert ana.record.department == "Sales"
    # displayName missing: cn stands in.
    assert await names(store, "carla") == ["Carla Ruiz"]
    # Mobile numbers count too, and every number is E.164.
    entries, _ = await store.search("bruno", page_size=5)
    assert entries[0].record.phone_numbers == ("+34911234567", "+34699112233")


async def test_search_after_sync(slapd: Slapd, store: DirectoryStore) -> None:
    await runner_for(store, ldap_config(slapd)).run("corp")
    assert await names(store, "gab") == ["Gabriel León"]
    assert await names(store, "leon") == ["Gabriel León"]
    assert await names(store, "fiona@example.co") == ["Fiona Smith"]
    assert await names(store, "622 33 44 55") == ["Gabriel León"]  # national
    assert await names(store, "+34622334455") == ["Gabriel León"]  # E.164
    assert await names(store, "0034 622") == ["Gabriel León"]
    assert await names(store, "020 7946", "GB") == ["Fiona Smith"]  # UK national, trunk 0
    assert await names(store, "+44 20 7946 0011") == ["Fiona Smith"]


async def test_incremental_sync_sees_a_changed_phone(slapd: Slapd, store: DirectoryStore) -> None:
    runner = runner_for(store, ldap_config(slapd))
    first = await runner.run("corp")
    before = await store.get_entry("ldap:corp", (await _id_of(store, "karen")))
    set_phone(slapd, "ana.garcia", "+34 600 00 00 01")
    run = await runner.run("corp")
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.full is False
    assert (run.added, run.updated, run.removed) == (0, 1, 0)
    assert await names(store, "600000001") == ["Ana García"]
    assert await names(store, "612345678") == []
    # Unchanged entries were not rewritten.
    after = await store.get_entry("ldap:corp", (await _id_of(store, "karen")))
    assert before == after
    # A further run finds nothing new: repeats at the cursor's second are dropped.
    again = await runner.run("corp")
    assert (again.full, again.added, again.updated, again.removed) == (False, 0, 0, 0)
    assert first.run_id < run.run_id < again.run_id


async def test_incremental_run_adds_new_entries(slapd: Slapd, store: DirectoryStore) -> None:
    runner = runner_for(store, ldap_config(slapd))
    await runner.run("corp")
    slapd.ldapadd(
        f"dn: uid=new.person,{PEOPLE_DN}\nobjectClass: inetOrgPerson\ncn: New Person\n"
        "sn: Person\ntelephoneNumber: 688 00 00 00\n"
    )
    run = await runner.run("corp")
    assert (run.full, run.added, run.updated) == (False, 1, 0)
    assert await names(store, "new p") == ["New Person"]


async def test_full_run_detects_deletions(slapd: Slapd, store: DirectoryStore) -> None:
    runner = runner_for(store, ldap_config(slapd))
    await runner.run("corp")
    slapd.ldapdelete(f"uid=luis.romero,{PEOPLE_DN}")
    incremental = await runner.run("corp")
    assert incremental.removed == 0  # LDAP searches do not report deletions
    full = await runner.run("corp", full=True)
    assert (full.full, full.added, full.updated, full.removed) == (True, 0, 0, 1)
    assert await names(store, "luis") == []
    assert await store.count("ldap:corp") == USABLE - 1


async def test_periodic_full_run(slapd: Slapd, store: DirectoryStore) -> None:
    now = [1_000_000.0]
    config = ldap_config(slapd, full_every="1h")
    timed = DirectoryStore(store.engine, clock=lambda: now[0])
    runner = SyncRunner(timed, [LdapConnector(config)])
    assert (await runner.run("corp")).full is True  # no cursor yet
    now[0] += 1800
    assert (await runner.run("corp")).full is False
    now[0] += 1800
    assert (await runner.run("corp")).full is True


async def test_bad_bind_fails_and_keeps_the_directory(
    slapd: Slapd, store: DirectoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = ldap_config(slapd)
    await runner_for(store, good).run("corp")
    wrong = "not-the-password-1234"
    bad = dataclasses.replace(good, bind_password=wrong)
    run = await runner_for(store, bad).run("corp", full=True)
    assert run.state is RunState.FAILED
    assert run.error == f"LDAP bind failed for {READER_DN}: invalidCredentials"
    assert wrong not in caplog.text and wrong not in repr(bad)
    assert await store.count("ldap:corp") == USABLE
    last = await store.last_run("corp")
    assert last is not None and last.state is RunState.FAILED


async def test_server_down_fails_and_keeps_the_directory(slapd: Slapd, store: DirectoryStore) -> None:
    runner = runner_for(store, ldap_config(slapd, timeout=5))
    await runner.run("corp")
    slapd.stop()
    run = await runner.run("corp", full=True)
    assert run.state is RunState.FAILED
    assert run.error.startswith("LDAP server unreachable at ldap://127.0.0.1:")
    assert await store.count("ldap:corp") == USABLE


async def test_server_dies_mid_search(slapd: Slapd, store: DirectoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = runner_for(store, ldap_config(slapd, page_size=5, timeout=5))
    await runner.run("corp")
    search = ldap3.Connection.search
    pages: list[int] = []

    def search_then_die(self: ldap3.Connection, *args: object, **kwargs: object) -> object:
        if pages:  # the first page came back; the server goes before the second
            slapd.stop()
        pages.append(1)
        return search(self, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "search", search_then_die)
    run = await runner.run("corp", full=True)
    assert run.state is RunState.FAILED
    assert run.error.startswith(f"LDAP search of {SUFFIX} failed"), run.error
    assert len(pages) == 2
    assert await store.count("ldap:corp") == USABLE


async def test_paging_over_many_pages(slapd: Slapd, store: DirectoryStore) -> None:
    pages: list[object] = []
    search = ldap3.Connection.search

    def counting(self: ldap3.Connection, *args: object, **kwargs: object) -> object:
        pages.append(kwargs.get("paged_size"))
        return search(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ldap3.Connection, "search", counting)
        run = await runner_for(store, ldap_config(slapd, page_size=5)).run("corp")
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.added == USABLE and run.skipped == SKIPPED
    # 14 people and the reader's branch entries are not persons: 14 over pages of 5.
    assert pages == [5, 5, 5]


async def test_second_run_while_running_is_aborted(slapd: Slapd, store: DirectoryStore) -> None:
    from core import errors
    from core.directory.runner import AlreadyRunning

    runner = runner_for(store, ldap_config(slapd))
    first = asyncio.create_task(runner.run("corp"))
    await asyncio.sleep(0)
    with pytest.raises(AlreadyRunning) as caught:
        await runner.run("corp")
    assert errors.from_failure(caught.value).code.name == "ABORTED"
    assert (await first).state is RunState.SUCCEEDED


async def test_anonymous_bind(slapd: Slapd, store: DirectoryStore) -> None:
    config = parse_connector("anon", {"type": "ldap", "urls": [slapd.url], "base_dn": PEOPLE_DN})
    assert isinstance(config, LdapConfig)
    run = await SyncRunner(store, [LdapConnector(config)]).run("anon")
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.added == USABLE


async def _id_of(store: DirectoryStore, query: str) -> str:
    entries, _ = await store.search(query, page_size=1)
    return entries[0].record.entry_id


async def test_fails_over_to_the_next_url(slapd: Slapd, store: DirectoryStore) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"ldap://127.0.0.1:{s.getsockname()[1]}"
    run = await runner_for(store, ldap_config(slapd, urls=[dead, slapd.url], timeout=2)).run("corp")
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.added == USABLE
