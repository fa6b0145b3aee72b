"""DirectoryService over a real gRPC socket: the search with the subscriber
mirror, and the connectors and Google link without any configured."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from core.directory.store import DirectoryStore
from core.server import Core
from tests.presence.devices import Device, md
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.status import field_violations
from wac.v1 import directory_pb2, directory_pb2_grpc, identity_pb2


async def search(
    device: Device, query: str, page_size: int = 0, page_token: str = ""
) -> directory_pb2.SearchDirectoryResponse:
    return await device.directory.SearchDirectory(
        directory_pb2.SearchDirectoryRequest(query=query, page_size=page_size, page_token=page_token),
        metadata=device.metadata,
    )


@pytest.fixture
async def alice(core: Core, channel: grpc.aio.Channel) -> Device:
    await add_subscriber(
        core, "alice", display_name="Alice Liddell", phone_numbers=["600 111 222"], email="alice@example.org"
    )
    return await Device.login(core, channel, "alice", connect=False)


@pytest.mark.parametrize(
    "query", ["600111222", "600 11", "+34 600 111 222", "+34600111222", "0034600111", "34600111222"]
)
async def test_search_finds_a_subscriber_by_number_in_any_form(alice: Device, query: str) -> None:
    found = await search(alice, query)
    assert [(e.source, e.entry_id, e.subscriber) for e in found.entries] == [("wac", "alice", "alice")]
    assert list(found.entries[0].phone_numbers) == ["+34600111222"]


async def test_search_by_name_and_email_with_paging(core: Core, alice: Device) -> None:
    for index in range(5):
        await add_subscriber(core, f"alicia{index}", display_name=f"Alicia {index}")
    found = await search(alice, "ali", page_size=4)
    assert len(found.entries) == 4 and found.next_page_token
    rest = await search(alice, "ali", page_size=4, page_token=found.next_page_token)
    names = [e.display_name for e in [*found.entries, *rest.entries]]
    assert sorted(names) == sorted(["Alice Liddell", *(f"Alicia {i}" for i in range(5))])
    assert rest.next_page_token == ""

    assert [e.entry_id for e in (await search(alice, "liddell")).entries] == ["alice"]
    assert [e.entry_id for e in (await search(alice, "alice@exa")).entries] == ["alice"]
    assert (await search(alice, "nobody at all")).entries == []


async def test_search_follows_subscriber_changes(core: Core, alice: Device) -> None:
    await add_subscriber(core, "bob", display_name="Bob Marley", phone_numbers=["611 222 333"])
    assert [e.entry_id for e in (await search(alice, "marley")).entries] == ["bob"]
    await core.identity.update(identity_pb2.Subscriber(username="bob", display_name="Robert Nesta"), ["display_name"])
    assert (await search(alice, "marley")).entries == []
    assert [e.display_name for e in (await search(alice, "611222")).entries] == ["Robert Nesta"]
    await core.identity.update(identity_pb2.Subscriber(username="bob", disabled=True), ["disabled"])
    assert (await search(alice, "robert")).entries == [], "a disabled subscriber is not in the directory"
    await core.identity.update(identity_pb2.Subscriber(username="bob", disabled=False), ["disabled"])
    assert [e.entry_id for e in (await search(alice, "robert")).entries] == ["bob"]


async def test_search_validates_and_needs_the_directory_permission(
    core: Core, channel: grpc.aio.Channel, alice: Device
) -> None:
    for query, page_size, token, field in (
        ("", 0, "", "query"),
        ("   ", 0, "", "query"),
        ("x" * 129, 0, "", "query"),
        ("ali", -1, "", "page_size"),
        ("ali", 0, "garbage!", "page_token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await search(alice, query, page_size, token)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]
    assert len((await search(alice, "a", page_size=1000)).entries) <= 100

    await add_subscriber(core, "gateway", roles=["pstn"])
    gateway = await Device.login(core, channel, "gateway", connect=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await search(gateway, "ali")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_existing_subscribers_are_mirrored_at_start(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data") as core:
        await add_subscriber(core, "alice", display_name="Alice", phone_numbers=["600111222"])
        await add_subscriber(core, "bob", display_name="Bob", disabled=True)
        directory = DirectoryStore(core.engine)
        assert await directory.count("wac") == 1
        await directory.delete_source("wac")  # as a database from before the mirror
    async with running_core(tmp_path / "data") as core:
        directory = DirectoryStore(core.engine)
        entries, _ = await directory.search("600111222", 10, "", "ES")
        assert [(e.source, e.record.entry_id) for e in entries] == [("wac", "alice")]
        assert await directory.count("wac") == 1


async def test_without_connectors_the_list_is_empty_and_google_unimplemented(
    core: Core, channel: grpc.aio.Channel, alice: Device
) -> None:
    stub = directory_pb2_grpc.DirectoryServiceStub(channel)
    admin = md(await api_key(core, "ops", "connectors.admin"))
    listed = await stub.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=admin)
    assert list(listed.connectors) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SyncConnector(directory_pb2.SyncConnectorRequest(name="corp"), metadata=admin)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.directory.GetGoogleLink(directory_pb2.GetGoogleLinkRequest(), metadata=alice.metadata)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "google" in (err.value.details() or "")
