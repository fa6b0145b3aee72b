"""PresenceService over a real gRPC socket: devices, aggregation, calls,
visibility both ways and service reads. The grace period and coalescing,
timed to the instant on a fake clock, are in test_windows.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from core.server import Core
from tests.presence.devices import Device, Status, eventually, md
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.status import field_violations
from tests.support.timing import seconds
from wac.v1 import contacts_pb2, identity_pb2, presence_pb2, presence_pb2_grpc

Reason = presence_pb2.Presence.Reason


@asynccontextmanager
async def core_with(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    async with (
        running_core(tmp_path / "data", env) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        yield core, channel


async def link(device: Device, username: str) -> contacts_pb2.Contact:
    """The device's subscriber adds ``username`` as a contact: under the
    "contacts" policy, its consent that ``username`` sees its presence."""
    return await device.contacts.CreateContact(
        contacts_pb2.CreateContactRequest(
            contact=contacts_pb2.Contact(display_name=username.title(), subscriber=username)
        ),
        metadata=device.metadata,
    )


async def users(core: Core, *names: str) -> None:
    for name in names:
        await add_subscriber(core, name, display_name=f"{name.title()} Example")


# --- Aggregation over devices. ----------------------------------------------


async def test_the_most_reachable_device_wins(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    laptop = await Device.login(core, channel, "alice")
    phone = await Device.login(core, channel, "alice")

    await laptop.set(Status.DO_NOT_DISTURB, "in a meeting")
    mine = await phone.set(Status.AWAY, "lunch")
    assert (mine.status, mine.note) == (Status.AWAY, "lunch")
    assert mine.display_name == "Alice Example"

    mine = await phone.set(Status.BUSY, "writing")
    assert (mine.status, mine.note) == (Status.BUSY, "writing"), "BUSY ranks above DO_NOT_DISTURB"

    await phone.logout()
    seen = await laptop.get("alice")
    assert (seen.status, seen.note) == (Status.DO_NOT_DISTURB, "in a meeting")
    assert seen.last_seen_time.seconds == pytest.approx(time.time(), abs=5)


async def test_a_device_counts_available_until_it_publishes(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    laptop = await Device.login(core, channel, "alice", connect=False)
    assert (await laptop.get("alice")).status == Status.OFFLINE
    assert not (await laptop.get("alice")).HasField("last_seen_time"), "never seen"

    await laptop.connect()
    assert (await laptop.get("alice")).status == Status.AVAILABLE


async def test_publishing_before_connecting_applies_on_connect(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    laptop = await Device.login(core, channel, "alice", connect=False)
    assert (await laptop.set(Status.AWAY, "back soon")).status == Status.OFFLINE
    await laptop.connect()
    seen = await laptop.get("alice")
    assert (seen.status, seen.note) == (Status.AWAY, "back soon")


async def test_publishing_offline_appears_offline(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    laptop = await Device.login(core, channel, "alice")
    assert (await laptop.set(Status.OFFLINE)).status == Status.OFFLINE
    assert (await laptop.set(Status.AVAILABLE, "hi")).status == Status.AVAILABLE


async def test_logout_and_revocation_are_offline_at_once(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice", "bob")
    bob = await Device.login(core, channel, "bob")
    alice = await Device.login(core, channel, "alice")
    await link(alice, "bob")
    await bob.presence_until("alice", Status.AVAILABLE)
    await alice.logout()
    assert (await bob.presence_until("alice", Status.OFFLINE)).status == Status.OFFLINE

    alice = await Device.login(core, channel, "alice")
    await bob.presence_until("alice", Status.AVAILABLE)
    admin = await api_key(core, "provisioning", "subscribers.write")
    await alice.identity.RevokeSessions(
        identity_pb2.RevokeSessionsRequest(username="alice"),
        metadata=md(admin),
    )
    await bob.presence_until("alice", Status.OFFLINE)


# --- In a call. ----------------------------------------------------------------


async def test_in_a_call_reads_busy_then_returns_to_the_published_status(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice", "bob")
    bob = await Device.login(core, channel, "bob")
    alice = await Device.login(core, channel, "alice")
    await link(alice, "bob")
    await alice.set(Status.AWAY, "coffee")
    await bob.presence_until("alice", Status.AWAY)

    assert core.presence is not None
    await core.presence.set_in_call("alice", True)
    busy = await bob.presence_until("alice", Status.BUSY)
    assert busy.reason == Reason.IN_CALL
    seen = await bob.get("alice")
    assert (seen.status, seen.reason) == (Status.BUSY, Reason.IN_CALL)
    await core.presence.set_in_call("alice", True)  # repeating is harmless

    await core.presence.set_in_call("alice", False)
    back = await bob.presence_until("alice", Status.AWAY)
    assert (back.note, back.reason) == ("coffee", Reason.REASON_UNSPECIFIED)


async def test_do_not_disturb_and_offline_stay_as_they_are_in_a_call(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    alice = await Device.login(core, channel, "alice")
    assert core.presence is not None
    await core.presence.set_in_call("alice", True)
    assert (await alice.get("alice")).reason == Reason.IN_CALL
    await alice.set(Status.DO_NOT_DISTURB)
    seen = await alice.get("alice")
    assert (seen.status, seen.reason) == (Status.DO_NOT_DISTURB, Reason.REASON_UNSPECIFIED)
    await alice.set(Status.OFFLINE)
    seen = await alice.get("alice")
    assert (seen.status, seen.reason) == (Status.OFFLINE, Reason.REASON_UNSPECIFIED), "no leak of an invisible device"


# --- Visibility. ----------------------------------------------------------------


async def test_contacts_policy_shows_a_subject_only_to_those_it_links(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice", "bob", "carol")
    alice = await Device.login(core, channel, "alice")
    bob = await Device.login(core, channel, "bob")
    carol = await Device.login(core, channel, "carol")

    for username in ("alice", "nobody"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bob.get(username)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, "a hidden and an unknown name look the same"
    batch = await bob.presence.BatchGetPresence(
        presence_pb2.BatchGetPresenceRequest(usernames=["alice", "bob", "nobody", "carol"]), metadata=bob.metadata
    )
    assert [p.username for p in batch.presences] == ["bob"]

    contact = await link(alice, "bob")  # alice consents to bob seeing her
    shown = await bob.presence_until("alice", Status.AVAILABLE)  # at once, on linking
    assert shown.display_name == "Alice Example"
    assert (await bob.get("alice")).status == Status.AVAILABLE
    batch = await bob.presence.BatchGetPresence(
        presence_pb2.BatchGetPresenceRequest(usernames=["carol", "alice", "bob", "alice"]), metadata=bob.metadata
    )
    assert [p.username for p in batch.presences] == ["alice", "bob"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.get("bob")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, "the consent is one-way"

    await alice.set(Status.BUSY, "deadline")
    assert (await bob.presence_until("alice", Status.BUSY)).note == "deadline"
    assert (await alice.presence_until("alice", Status.BUSY)).note == "deadline", "its own devices hear it"
    assert [p for p in await carol.heard_before_own_change() if p.username == "alice"] == []

    await alice.contacts.DeleteContact(
        contacts_pb2.DeleteContactRequest(contact_id=contact.contact_id), metadata=alice.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bob.get("alice")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await alice.set(Status.AVAILABLE)
    await alice.presence_until("alice", Status.AVAILABLE)  # emitted, to all its watchers at once
    assert [p for p in await bob.heard_before_own_change() if p.username == "alice"] == []


async def test_linking_someone_grants_no_sight_of_them(core: Core, channel: grpc.aio.Channel) -> None:
    """Issue 14, item 6: a subscriber refused dave's presence added dave as
    a contact and then saw his status, note and live changes."""
    await users(core, "dave", "mallory")
    dave = await Device.login(core, channel, "dave")
    mallory = await Device.login(core, channel, "mallory")
    await dave.set(Status.AWAY, "at the dentist")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mallory.get("dave")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "the presence of 'dave' is not visible to you", "it does not say how to get access"
    assert "contact" not in err.value.details()

    await link(mallory, "dave")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mallory.get("dave")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    batch = await mallory.presence.BatchGetPresence(
        presence_pb2.BatchGetPresenceRequest(usernames=["dave", "mallory"]), metadata=mallory.metadata
    )
    assert [p.username for p in batch.presences] == ["mallory"]

    # No live change reaches mallory either. dave's device hearing his change
    # proves it was emitted (to all its watchers in one append); mallory's
    # own change, published after, is a later event in her stream, so every
    # event of dave's meant for her would come before it.
    await dave.set(Status.BUSY, "root canal")
    await dave.presence_until("dave", Status.BUSY)
    await mallory.set(Status.AWAY, "sentinel")
    seen: list[str] = []
    while True:
        event = (await mallory.next_event("presence_changed")).presence_changed
        if event.username == "mallory" and event.note == "sentinel":
            break
        seen.append(event.username)
    assert "dave" not in seen


async def test_domain_policy_shows_everyone(tmp_path: Path) -> None:
    async with core_with(tmp_path, WAC_PRESENCE_VISIBILITY="domain") as (core, channel):
        await users(core, "alice", "bob")
        bob = await Device.login(core, channel, "bob")
        assert (await bob.get("alice")).status == Status.OFFLINE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bob.get("nobody")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        alice = await Device.login(core, channel, "alice")
        await bob.presence_until("alice", Status.AVAILABLE)
        await alice.set(Status.AWAY)
        await bob.presence_until("alice", Status.AWAY)
        batch = await bob.presence.BatchGetPresence(
            presence_pb2.BatchGetPresenceRequest(usernames=["alice", "nobody", "bob"]), metadata=bob.metadata
        )
        assert [(p.username, p.status) for p in batch.presences] == [
            ("alice", Status.AWAY),
            ("bob", Status.AVAILABLE),
        ]


# --- Requests and permissions. -------------------------------------------------


async def test_set_presence_validates_its_request(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    alice = await Device.login(core, channel, "alice", connect=False)
    for status, note, field in (
        (Status.STATUS_UNSPECIFIED, "", "status"),
        (42, "", "status"),
        (Status.AWAY, "x" * 257, "note"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alice.set(status, note)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]
    assert (await alice.set(Status.AWAY, "x" * 256)).note == ""  # accepted; offline until connected


async def test_set_presence_needs_the_publish_permission(core: Core, channel: grpc.aio.Channel) -> None:
    await add_subscriber(core, "gateway", roles=["pstn"])
    device = await Device.login(core, channel, "gateway", connect=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await device.set(Status.AVAILABLE)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "presence.publish" in (err.value.details() or "")


async def test_batch_get_presence_bounds(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice")
    alice = await Device.login(core, channel, "alice", connect=False)
    for usernames, field in (([], "usernames"), (["a"] * 501, "usernames"), (["alice", ""], "usernames[1]")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alice.presence.BatchGetPresence(
                presence_pb2.BatchGetPresenceRequest(usernames=usernames), metadata=alice.metadata
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]
    batch = await alice.presence.BatchGetPresence(
        presence_pb2.BatchGetPresenceRequest(usernames=["alice"] * 500), metadata=alice.metadata
    )
    assert [p.username for p in batch.presences] == ["alice"]


async def test_a_service_with_presence_read_sees_anyone(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice", "bob")
    alice = await Device.login(core, channel, "alice")
    await alice.set(Status.BUSY, "on site")
    stub = presence_pb2_grpc.PresenceServiceStub(channel)
    reader = md(await api_key(core, "crm", "presence.read"))

    seen = await stub.GetPresence(presence_pb2.GetPresenceRequest(username="alice"), metadata=reader)
    assert (seen.status, seen.note, seen.display_name) == (Status.BUSY, "on site", "Alice Example")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPresence(presence_pb2.GetPresenceRequest(username="nobody"), metadata=reader)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    batch = await stub.BatchGetPresence(
        presence_pb2.BatchGetPresenceRequest(usernames=["bob", "nobody", "alice"]), metadata=reader
    )
    assert [(p.username, p.status) for p in batch.presences] == [("bob", Status.OFFLINE), ("alice", Status.BUSY)]

    other = md(await api_key(core, "billing", "calls.read"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPresence(presence_pb2.GetPresenceRequest(username="alice"), metadata=other)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetPresence(presence_pb2.SetPresenceRequest(status=Status.AWAY), metadata=reader)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_renamed_subscriber_is_announced(core: Core, channel: grpc.aio.Channel) -> None:
    await users(core, "alice", "bob")
    bob = await Device.login(core, channel, "bob")
    alice = await Device.login(core, channel, "alice")
    await link(alice, "bob")
    await bob.presence_until("alice", Status.AVAILABLE)
    await core.identity.update(
        identity_pb2.Subscriber(username="alice", display_name="Alice Renamed"),
        ["display_name"],
    )
    assert (await bob.next_presence("alice")).display_name == "Alice Renamed"


async def test_presence_survives_a_restart_as_offline_with_the_published_status(tmp_path: Path) -> None:
    async with core_with(tmp_path) as (core, channel):
        await users(core, "alice")
        alice = await Device.login(core, channel, "alice")
        await alice.set(Status.AWAY, "holiday")
        session = alice.session
        await alice.disconnect()
    async with core_with(tmp_path) as (core, channel):
        alice = Device(core, channel, session)
        assert (await alice.get("alice")).status == Status.OFFLINE
        await alice.connect()
        await eventually(lambda: _status_is(alice, Status.AWAY), seconds())


async def _status_is(device: Device, status: int) -> bool:
    return (await device.get(device.username)).status == status
