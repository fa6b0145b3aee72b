"""`wac admin subscriber` reaches the directory (issue 14, item 16): a
subscriber added by the CLI was never found by SearchDirectory, since the
CLI built identity without the directory's listener. Now the CLI builds
identity as the core does, and every core start reconciles the mirror."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from core.directory.records import DirectoryRecord
from core.directory.store import DirectoryStore
from core.identity.store import IdentityStore, SubscriberRow
from core.server import Core
from tests.support.cli import cli_env, wac_async
from tests.support.core import add_subscriber, login, running_core
from tests.support.timing import seconds
from wac.v1 import directory_pb2, directory_pb2_grpc


async def wac_admin(data_dir: Path, *args: str) -> str:
    """Run the real CLI on the data dir (without blocking the core's loop)."""
    result = await wac_async("admin", *args, env=cli_env(data_dir), timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def found(core: Core, query: str) -> list[str]:
    """The entry ids SearchDirectory gives the subscriber "searcher" for ``query``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        session = await login(channel, "searcher")
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        reply = await stub.SearchDirectory(
            directory_pb2.SearchDirectoryRequest(query=query),
            metadata=(("authorization", f"Bearer {session.access_token}"),),
        )
        return [entry.entry_id for entry in reply.entries]


async def found_within(core: Core, query: str, expected: list[str]) -> None:
    deadline = time.monotonic() + seconds(2)
    while (got := await found(core, query)) != expected:
        assert time.monotonic() < deadline, f"SearchDirectory({query!r}) gave {got}, not {expected}"
        await asyncio.sleep(0.05)


async def test_a_subscriber_added_by_the_cli_is_in_the_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running_core(data_dir) as core:
        await add_subscriber(core, "searcher")
        assert await found(core, "dora") == []
        await wac_admin(
            data_dir,
            "subscriber",
            "add",
            "dora",
            "--password",
            "correct horse battery",
            "--display-name",
            "Dora Maar",
            "--phone",
            "+34600777888",
        )
        await found_within(core, "dora", ["dora"])
        await found_within(core, "600 777 888", ["dora"])
        # Disabling hides the entry, enabling shows it again: every change reaches it.
        await wac_admin(data_dir, "subscriber", "disable", "dora")
        await found_within(core, "maar", [])
        await wac_admin(data_dir, "subscriber", "enable", "dora")
        await found_within(core, "maar", ["dora"])
    async with running_core(data_dir) as core:
        assert await found(core, "dora maar") == ["dora"], "after a restart too"


async def test_a_core_start_reconciles_the_mirror_with_the_subscribers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running_core(data_dir) as core:
        await add_subscriber(core, "searcher")
        # Behind the mirror's back, as a CLI without its listener wrote: a
        # subscriber with no entry, and an entry with no subscriber.
        now = time.time()
        await IdentityStore(core.engine).create_subscriber(
            SubscriberRow("elsa", "Elsa Triolet", (), "", ("user",), False, "x", now, now)
        )
        await DirectoryStore(core.engine).upsert_entry(
            "wac", DirectoryRecord("ghost", "Ghost Writer", (), (), subscriber="ghost")
        )
        assert await found(core, "elsa") == []
        assert await found(core, "ghost") == ["ghost"]
    async with running_core(data_dir) as core:
        assert await found(core, "elsa") == ["elsa"]
        assert await found(core, "ghost") == []
