"""A whole core on PostgreSQL: every service's SQL runs there as it runs on
SQLite in the rest of the suite, over gRPC, from migrations to listings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.calls.support import Call, Device, World, fails, open_world
from tests.support.core import login
from wac.v1 import contacts_pb2, contacts_pb2_grpc, directory_pb2, directory_pb2_grpc, presence_pb2, presence_pb2_grpc

Status = presence_pb2.Presence.Status
Contact = contacts_pb2.Contact


@pytest.fixture
async def world(tmp_path: Path, postgres_url: str) -> AsyncIterator[World]:
    async with open_world(tmp_path, {"WAC_CORE_DATABASE_URL": postgres_url}) as running:
        assert running.core.engine.dialect.name == "postgresql"
        yield running


def contacts(device: Device) -> contacts_pb2_grpc.ContactsServiceStub:
    return contacts_pb2_grpc.ContactsServiceStub(device.channel)


def presence(device: Device) -> presence_pb2_grpc.PresenceServiceStub:
    return presence_pb2_grpc.PresenceServiceStub(device.channel)


async def test_presence_contacts_and_directory(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    book = contacts(alice)

    # Contacts: create, get, list, update, delete.
    made = await book.CreateContact(
        contacts_pb2.CreateContactRequest(
            contact=Contact(display_name="Bob", subscriber="bob", phone_numbers=["+34 600 222 333"])
        ),
        metadata=alice.metadata,
    )
    got = await book.GetContact(contacts_pb2.GetContactRequest(contact_id=made.contact_id), metadata=alice.metadata)
    assert got == made and list(got.phone_numbers) == ["+34600222333"]
    made.display_name, made.favorite = "Bob Dylan", True
    updated = await book.UpdateContact(
        contacts_pb2.UpdateContactRequest(
            contact=made, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "favorite"])
        ),
        metadata=alice.metadata,
    )
    assert (updated.display_name, updated.favorite) == ("Bob Dylan", True)
    listed = await book.ListContacts(contacts_pb2.ListContactsRequest(), metadata=alice.metadata)
    assert [c.contact_id for c in listed.contacts] == [made.contact_id]

    # Presence: Bob lets Alice see him (she is among his contacts), publishes,
    # and Alice reads it back.
    await contacts(bob).CreateContact(
        contacts_pb2.CreateContactRequest(contact=Contact(display_name="Alice", subscriber="alice")),
        metadata=bob.metadata,
    )
    mine = await presence(bob).SetPresence(
        presence_pb2.SetPresenceRequest(status=Status.AWAY, note="lunch"), metadata=bob.metadata
    )
    assert (mine.status, mine.note) == (Status.AWAY, "lunch")
    seen = await presence(alice).GetPresence(presence_pb2.GetPresenceRequest(username="bob"), metadata=alice.metadata)
    assert (seen.status, seen.note, seen.display_name) == (Status.AWAY, "lunch", "Bob Dylan")

    # The directory mirrors subscribers; the search is a prefix over names.
    found = await directory_pb2_grpc.DirectoryServiceStub(alice.channel).SearchDirectory(
        directory_pb2.SearchDirectoryRequest(query="bob"), metadata=alice.metadata
    )
    assert [e.subscriber for e in found.entries] == ["bob"]
    found = await directory_pb2_grpc.DirectoryServiceStub(bob.channel).SearchDirectory(
        directory_pb2.SearchDirectoryRequest(query="Lid"), metadata=bob.metadata
    )
    assert [e.display_name for e in found.entries] == ["Alice Liddell"]

    await book.DeleteContact(contacts_pb2.DeleteContactRequest(contact_id=made.contact_id), metadata=alice.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await book.GetContact(contacts_pb2.GetContactRequest(contact_id=made.contact_id), metadata=alice.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_call_is_answered_hung_up_and_listed(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")

    call = await alice.create("bob")
    assert call.state == Call.RINGING
    await bob.expect("call_invited")
    await alice.expect("call_ringing")
    assert (await bob.answer(call.call_id)).state == Call.ACTIVE
    await alice.expect("call_answered")
    ended = await alice.hangup(call.call_id)
    assert (ended.state, ended.end_reason, ended.ended_by) == (Call.ENDED, Call.COMPLETED, "alice")
    await bob.expect("call_ended")

    # A second call, declined, so the listing has an order and a filter to apply.
    second = await bob.create("alice")
    await alice.expect("call_invited")
    await alice.reject(second.call_id)

    listed = await alice.list()
    assert [c.call_id for c in listed.calls] == [second.call_id, call.call_id]
    record = listed.calls[1]
    assert record.HasField("answer_time") and record.HasField("duration")
    assert [c.call_id for c in (await bob.list(state=Call.ENDED, page_size=1)).calls] == [second.call_id]

    # The history is in PostgreSQL, not in this core's memory.
    await world.restart()
    for device in (alice, bob):
        await device.connect()
    assert [c.call_id for c in (await alice.list()).calls] == [second.call_id, call.call_id]


async def test_text_with_nul_is_refused_as_on_sqlite(world: World) -> None:
    # PostgreSQL cannot bind U+0000: these were INTERNAL errors there (NOT_FOUND
    # or stored on SQLite) until the interceptor refused them on both.
    alice = await world.device("alice")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await fails(invalid, login(world.channel, "al\x00ice"), "username: must not contain NUL")
    await fails(invalid, alice.get("c\x00"), "call_id")
    note = contacts_pb2.CreateContactRequest(contact=Contact(display_name="Bob", notes="a\x00b"))
    await fails(invalid, contacts(alice).CreateContact(note, metadata=alice.metadata), "contact.notes")
