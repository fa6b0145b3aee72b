"""Connectors wired into a real core: the LDAP connector against a real
slapd, its schedule, ListConnectors and SyncConnector over gRPC with an API
key, the directory search that finds what it imported, and
``wac connectors`` as a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from core.directory.store import DirectoryStore
from core.server import Core
from settings.config import ConfigError
from tests.presence.devices import Device, eventually, md
from tests.support.cli import cli_env
from tests.support.cli import wac as run_wac
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.slapd import READER_DN, READER_PASSWORD, SUFFIX, Slapd
from tests.support.timing import seconds
from wac.v1 import directory_pb2, directory_pb2_grpc

USABLE, SKIPPED = 12, 2  # as in fixtures/ldap/10-people.ldif
SyncRun = directory_pb2.SyncRun


def ldap_section(server: Slapd, *, interval: str = "1h", **extra: str) -> str:
    lines = [
        "[connectors.corp]",
        'type = "ldap"',
        f'urls = ["{server.url}"]',
        f'bind_dn = "{READER_DN}"',
        f'bind_password = "{READER_PASSWORD}"',
        f'base_dn = "{SUFFIX}"',
        f'interval = "{interval}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wac.toml"
    path.write_text(text)
    return path


@asynccontextmanager
async def core_with(tmp_path: Path, config: str) -> AsyncIterator[Core]:
    path = write_config(tmp_path, config)
    async with running_core(tmp_path / "data", {"WAC_CONFIG": str(path)}) as core:
        yield core


@asynccontextmanager
async def channel_to(core: Core) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        yield channel


async def listed(stub: directory_pb2_grpc.DirectoryServiceStub, key: str) -> dict[str, directory_pb2.Connector]:
    response = await stub.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=md(key))
    return {c.name: c for c in response.connectors}


async def wait_for_run(stub: directory_pb2_grpc.DirectoryServiceStub, key: str, name: str) -> directory_pb2.SyncRun:
    """The connector's last run, once one has finished."""
    found: list[directory_pb2.SyncRun] = []

    async def finished() -> bool:
        connector = (await listed(stub, key)).get(name)
        if connector is None or not connector.HasField("last_run") or connector.last_run.state == SyncRun.RUNNING:
            return False
        found.append(connector.last_run)
        return True

    await eventually(finished)
    return found[-1]


def set_reader_password(server: Slapd, password: str) -> None:
    server.ldapmodify(f"dn: {READER_DN}\nchangetype: modify\nreplace: userPassword\nuserPassword: {password}\n")


async def search(device: Device, query: str) -> list[tuple[str, str]]:
    response = await device.directory.SearchDirectory(
        directory_pb2.SearchDirectoryRequest(query=query, page_size=50), metadata=device.metadata
    )
    return [(e.source, e.display_name) for e in response.entries]


async def test_scheduled_run_then_list_sync_and_search(slapd: Slapd, tmp_path: Path) -> None:
    async with core_with(tmp_path, ldap_section(slapd)) as core, channel_to(core) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        admin = await api_key(core, "ops", "connectors.admin")

        # The schedule ran the connector at start: it had never run.
        first = await wait_for_run(stub, admin, "corp")
        assert first.state == SyncRun.SUCCEEDED, first.error
        assert (first.full, first.added, first.updated, first.removed, first.skipped) == (True, USABLE, 0, 0, SKIPPED)
        assert first.duration.ToNanoseconds() > 0 and first.start_time.seconds > 0
        assert (await listed(stub, admin))["corp"].type == "ldap"

        # Asked for now: nothing changed since, so nothing to do.
        again = await stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp"), metadata=md(admin))
        assert (again.connector, again.state, again.full, again.added) == ("corp", SyncRun.SUCCEEDED, False, 0)
        full = await stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp", full=True), metadata=md(admin))
        assert (full.state, full.full, full.added, full.updated, full.removed) == (SyncRun.SUCCEEDED, True, 0, 0, 0)

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="nope"), metadata=md(admin))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (unknown.value.details() or "")

        # The entries are in the directory every subscriber searches.
        await add_subscriber(core, "alice")
        await add_subscriber(core, "bob")
        alice = await Device.login(core, channel, "alice", connect=False)
        bob = await Device.login(core, channel, "bob", connect=False)
        assert await search(alice, "ana garc") == [("ldap:corp", "Ana García")]
        assert await search(bob, "+34 612 34 56 78") == [("ldap:corp", "Ana García")]

        # The connector methods are for keys with the connectors.admin scope.
        other = await api_key(core, "gateway", "calls.read")
        for credential in (other, alice.session.access_token):
            for call in (
                stub.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=md(credential)),
                stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp"), metadata=md(credential)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await call
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_schedule_repeats(slapd: Slapd, tmp_path: Path) -> None:
    async with core_with(tmp_path, ldap_section(slapd, interval="0.2s")) as core:
        store = DirectoryStore(core.engine)

        async def ran_three_times() -> bool:
            last = await store.last_run("corp")
            return last is not None and last.run_id >= 3 and last.end_time is not None

        await eventually(ran_three_times)
        last = await store.last_run("corp")
        assert last is not None and last.error == "" and not last.full  # incremental after the first


async def test_a_failed_run_is_reported_and_changes_nothing(slapd: Slapd, tmp_path: Path) -> None:
    async with core_with(tmp_path, ldap_section(slapd)) as core, channel_to(core) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        admin = await api_key(core, "ops", "connectors.admin")
        assert (await wait_for_run(stub, admin, "corp")).state == SyncRun.SUCCEEDED

        set_reader_password(slapd, "changed-behind-our-back")
        failed = await stub.SyncConnector(
            directory_pb2.SyncConnectorRequest(name="corp", full=True), metadata=md(admin)
        )
        assert failed.state == SyncRun.FAILED
        assert failed.error == f"LDAP bind failed for {READER_DN}: invalidCredentials"
        assert (failed.added, failed.updated, failed.removed) == (0, 0, 0)
        reported = (await listed(stub, admin))["corp"].last_run
        assert (reported.state, reported.error) == (SyncRun.FAILED, failed.error)

        # The previous import stands.
        await add_subscriber(core, "alice")
        alice = await Device.login(core, channel, "alice", connect=False)
        assert await search(alice, "ana garc") == [("ldap:corp", "Ana García")]
        assert await DirectoryStore(core.engine).count("ldap:corp") == USABLE


async def test_a_second_sync_while_one_runs_is_aborted(slapd: Slapd, tmp_path: Path) -> None:
    async with core_with(tmp_path, ldap_section(slapd, timeout='"10s"')) as core, channel_to(core) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        admin = await api_key(core, "ops", "connectors.admin")
        assert (await wait_for_run(stub, admin, "corp")).state == SyncRun.SUCCEEDED

        assert slapd.process is not None and slapd.process.poll() is None
        # A frozen server keeps the first run waiting for its answer.
        slapd.process.send_signal(signal.SIGSTOP)
        try:
            first = asyncio.ensure_future(
                stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp"), metadata=md(admin))
            )

            async def running() -> bool:
                return (await listed(stub, admin))["corp"].last_run.state == SyncRun.RUNNING

            await eventually(running)
            with pytest.raises(grpc.aio.AioRpcError) as second:
                await stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp"), metadata=md(admin))
            assert second.value.code() == grpc.StatusCode.ABORTED
            assert "already running" in (second.value.details() or "")
        finally:
            slapd.process.send_signal(signal.SIGCONT)
        done = await asyncio.wait_for(first, seconds())
        assert done.state == SyncRun.SUCCEEDED, done.error


async def test_a_bad_connector_section_stops_the_start(tmp_path: Path) -> None:
    config = '[connectors.corp]\ntype = "ldap"\nurls = ["ldap://127.0.0.1:1/"]\nbase_dn = "dc=x"\npage_size = 0\n'
    with pytest.raises(ConfigError, match=r"\[connectors\.corp\] page_size: must be between 1 and 10000, got 0"):
        async with core_with(tmp_path, config):
            pass
    two_google = "".join(
        f'[connectors.{name}]\ntype = "google"\nclient_id = "c"\nclient_secret = "s"\n'
        f'redirect_uri = "https://wac.example.org/oauth2/google/callback"\n'
        f'token_key = "{"A" * 43}="\n'
        for name in ("google", "gmail")
    )
    with pytest.raises(ConfigError, match=r"\[connectors\.gmail\] type: only one google connector"):
        async with core_with(tmp_path, two_google):
            pass


# --- wac connectors, as an operator runs it. -------------------------------------


def wac(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wac("connectors", *args, env=cli_env(tmp_path / "data", {"WAC_CONFIG": str(tmp_path / "wac.toml")}))


def test_cli_sync_and_list(slapd: Slapd, tmp_path: Path) -> None:
    write_config(tmp_path, ldap_section(slapd))

    never = wac(tmp_path, "list")
    assert (never.returncode, never.stdout) == (0, "corp\tldap\tnever run\n"), never.stderr

    ran = wac(tmp_path, "sync", "corp")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("corp: SUCCEEDED, full run of ")
    assert ran.stdout.endswith(f": {USABLE} added, 0 updated, 0 removed, {SKIPPED} skipped\n")
    assert ran.stderr == ""

    forced = wac(tmp_path, "sync", "corp", "--full")
    assert forced.returncode == 0 and "SUCCEEDED, full run" in forced.stdout

    listing = wac(tmp_path, "list")
    assert listing.returncode == 0 and listing.stdout.startswith("corp\tldap\tSUCCEEDED, full run of ")

    set_reader_password(slapd, "changed-behind-our-back")
    failed = wac(tmp_path, "sync", "corp")
    assert failed.returncode == 1
    assert failed.stdout.startswith("corp: FAILED, ")
    assert failed.stderr == f"wac: sync of corp failed: LDAP bind failed for {READER_DN}: invalidCredentials\n"

    unknown = wac(tmp_path, "sync", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr == "wac: no connector named nope; configured: corp\n"

    write_config(tmp_path, ldap_section(slapd, page_size="0"))
    bad = wac(tmp_path, "sync", "corp")
    assert bad.returncode == 2
    assert "[connectors.corp] page_size: must be between 1 and 10000" in bad.stderr
