"""ContactsService over a real gRPC socket: the address book, its bounds and
events. The directory's search is in tests/directory/test_directory_service.py."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from core.server import Core
from tests.presence.devices import Device, md
from tests.support.core import add_subscriber, api_key
from tests.support.status import field_violations
from wac.v1 import contacts_pb2, identity_pb2

Contact = contacts_pb2.Contact


async def create(device: Device, **fields: Any) -> Contact:
    return await device.contacts.CreateContact(
        contacts_pb2.CreateContactRequest(contact=Contact(**fields)), metadata=device.metadata
    )


async def update(device: Device, contact: Contact, *paths: str) -> Contact:
    return await device.contacts.UpdateContact(
        contacts_pb2.UpdateContactRequest(contact=contact, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        metadata=device.metadata,
    )


async def get(device: Device, contact_id: str) -> Contact:
    return await device.contacts.GetContact(
        contacts_pb2.GetContactRequest(contact_id=contact_id), metadata=device.metadata
    )


async def delete(device: Device, contact_id: str) -> None:
    await device.contacts.DeleteContact(
        contacts_pb2.DeleteContactRequest(contact_id=contact_id), metadata=device.metadata
    )


@pytest.fixture
async def alice(core: Core, channel: grpc.aio.Channel) -> Device:
    await add_subscriber(
        core, "alice", display_name="Alice Liddell", phone_numbers=["600 111 222"], email="alice@example.org"
    )
    return await Device.login(core, channel, "alice", connect=False)


# --- The address book. ----------------------------------------------------------


async def test_create_get_update_delete(core: Core, channel: grpc.aio.Channel, alice: Device) -> None:
    await add_subscriber(core, "bob", display_name="Bob")
    made = await create(
        alice,
        contact_id="ignored",
        display_name="  Bob Builder ",
        phone_numbers=["600 222 333", "+34 600222333", "0044 20 7946 0958"],
        emails=["Bob@Example.org", "bob@example.org"],
        subscriber="bob",
        favorite=True,
        notes="met at the fair",
    )
    assert len(made.contact_id) >= 20 and made.contact_id != "ignored"
    assert made.display_name == "Bob Builder"
    assert list(made.phone_numbers) == ["+34600222333", "+442079460958"]
    assert list(made.emails) == ["Bob@Example.org"]
    assert (made.subscriber, made.favorite, made.notes) == ("bob", True, "met at the fair")
    assert made.create_time == made.update_time
    assert await get(alice, made.contact_id) == made

    changed = await update(alice, Contact(contact_id=made.contact_id, notes="", favorite=False), "notes", "favorite")
    assert (changed.notes, changed.favorite, changed.display_name) == ("", False, "Bob Builder")
    assert changed.update_time.ToNanoseconds() >= made.update_time.ToNanoseconds()

    # An empty mask changes the fields that are set, and only those.
    changed = await update(
        alice, Contact(contact_id=made.contact_id, display_name="Robert", phone_numbers=["611 000 111"])
    )
    assert (changed.display_name, list(changed.phone_numbers), changed.subscriber) == (
        "Robert",
        ["+34611000111"],
        "bob",
    )

    changed = await update(alice, Contact(contact_id=made.contact_id), "subscriber")
    assert changed.subscriber == ""

    await delete(alice, made.contact_id)
    for call in (get(alice, made.contact_id), delete(alice, made.contact_id)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


INVALID_CREATES = [
    ({"display_name": ""}, "contact.display_name"),
    ({"display_name": "   "}, "contact.display_name"),
    ({"display_name": "x" * 129}, "contact.display_name"),
    ({"display_name": "tab\there"}, "contact.display_name"),
    ({"display_name": "A", "phone_numbers": ["600111222", "12"]}, "contact.phone_numbers[1]"),
    ({"display_name": "A", "phone_numbers": ["not a number"]}, "contact.phone_numbers[0]"),
    ({"display_name": "A", "phone_numbers": [f"6001112{i:02}" for i in range(21)]}, "contact.phone_numbers"),
    ({"display_name": "A", "emails": ["a@example.org", "nope"]}, "contact.emails[1]"),
    ({"display_name": "A", "emails": [""]}, "contact.emails[0]"),
    ({"display_name": "A", "emails": [f"a{i}@example.org" for i in range(21)]}, "contact.emails"),
    ({"display_name": "A", "subscriber": "nobody"}, "contact.subscriber"),
    ({"display_name": "A", "subscriber": "x" * 65}, "contact.subscriber"),
    ({"display_name": "A", "notes": "n" * 1025}, "contact.notes"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID_CREATES)
async def test_create_rejects_each_invalid_field(alice: Device, fields: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(alice, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [field]


async def test_bounds_at_the_limit_are_accepted(alice: Device) -> None:
    made = await create(
        alice,
        display_name="x" * 128,
        phone_numbers=[f"6001112{i:02}" for i in range(20)],
        emails=[f"a{i}@example.org" for i in range(20)],
        notes="n" * 1024,
    )
    assert (len(made.phone_numbers), len(made.emails)) == (20, 20)


async def test_update_rejects_invalid_requests(alice: Device) -> None:
    made = await create(alice, display_name="Carol")
    cases = [
        (Contact(display_name="No id"), ("display_name",), "contact.contact_id"),
        (Contact(contact_id=made.contact_id), ("create_time",), "update_mask"),
        (Contact(contact_id=made.contact_id), ("contact_id",), "update_mask"),
        (Contact(contact_id=made.contact_id), ("nonsense",), "update_mask"),
        (Contact(contact_id=made.contact_id), ("display_name",), "contact.display_name"),
        (Contact(contact_id=made.contact_id, phone_numbers=["1"]), ("phone_numbers",), "contact.phone_numbers[0]"),
        (Contact(contact_id=made.contact_id, subscriber="nobody"), (), "contact.subscriber"),
    ]
    for contact, paths, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await update(alice, contact, *paths)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (paths, field)
        assert field_violations(err.value) == [field]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await update(alice, Contact(contact_id="no-such-contact", display_name="X"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await get(alice, made.contact_id) == made


async def test_a_subscriber_reaches_only_its_own_contacts(core: Core, channel: grpc.aio.Channel, alice: Device) -> None:
    await add_subscriber(core, "mallory")
    mallory = await Device.login(core, channel, "mallory", connect=False)
    made = await create(alice, display_name="Secret")
    for call in (
        get(mallory, made.contact_id),
        update(mallory, Contact(contact_id=made.contact_id, display_name="Mine")),
        delete(mallory, made.contact_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await mallory.contacts.ListContacts(contacts_pb2.ListContactsRequest(), metadata=mallory.metadata)
    assert list(listed.contacts) == []
    assert (await get(alice, made.contact_id)).display_name == "Secret"


async def test_the_address_book_is_bounded(core: Core, alice: Device) -> None:
    assert core.contacts is not None
    core.contacts.max_contacts = 3
    for index in range(3):
        await create(alice, display_name=f"Contact {index}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(alice, display_name="One too many")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_list_pages_in_display_name_order(alice: Device) -> None:
    names = [f"Name {i:02}" for i in range(23)] + ["ángel", "Ángel", "zoe", "Émile"]
    random.Random(7).shuffle(names)
    created = {}
    for name in names:
        made = await create(alice, display_name=name)
        created[made.contact_id] = made

    seen: list[Contact] = []
    token = ""
    pages = 0
    while True:
        page = await alice.contacts.ListContacts(
            contacts_pb2.ListContactsRequest(page_size=10, page_token=token), metadata=alice.metadata
        )
        pages += 1
        assert len(page.contacts) <= 10
        seen += page.contacts
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert {c.contact_id for c in seen} == set(created)
    order = [c.display_name for c in seen]
    assert order[:2] in (["ángel", "Ángel"], ["Ángel", "ángel"])
    assert order[2:4] == ["Émile", "Name 00"]
    assert order[-1] == "zoe"
    same_name = [c.contact_id for c in seen if c.display_name.lower() == "ángel"]
    assert same_name == sorted(same_name), "equal names are ordered by id"

    everything = await alice.contacts.ListContacts(contacts_pb2.ListContactsRequest(), metadata=alice.metadata)
    assert [c.contact_id for c in everything.contacts] == [c.contact_id for c in seen]
    assert everything.next_page_token == ""

    for request, field in (
        (contacts_pb2.ListContactsRequest(page_token="garbage!"), "page_token"),
        (contacts_pb2.ListContactsRequest(page_token="WzFd"), "page_token"),  # [1]
        (contacts_pb2.ListContactsRequest(page_size=-1), "page_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alice.contacts.ListContacts(request, metadata=alice.metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]


async def test_changes_reach_the_owners_other_devices_only(
    core: Core, channel: grpc.aio.Channel, alice: Device
) -> None:
    await add_subscriber(core, "bob")
    phone = await Device.login(core, channel, "alice")
    await alice.connect()
    bob = await Device.login(core, channel, "bob")

    made = await create(alice, display_name="Dave")
    event = (await phone.next_event("contact_changed")).contact_changed
    assert (event.contact, event.deleted) == (made, False)

    changed = await update(alice, Contact(contact_id=made.contact_id, favorite=True))
    assert (await phone.next_event("contact_changed")).contact_changed.contact == changed

    await delete(alice, made.contact_id)
    event = (await phone.next_event("contact_changed")).contact_changed
    assert (event.contact, event.deleted) == (Contact(contact_id=made.contact_id), True)

    for device in (alice, bob):
        assert [e for e in await device.drain() if e.HasField("contact_changed")] == []


async def test_deleting_a_subscriber_unlinks_the_contacts(core: Core, channel: grpc.aio.Channel, alice: Device) -> None:
    await add_subscriber(core, "bob")
    made = await create(alice, display_name="Bob", subscriber="bob")
    admin = md(await api_key(core, "provisioning", "subscribers.write"))
    await alice.identity.DeleteSubscriber(identity_pb2.DeleteSubscriberRequest(username="bob"), metadata=admin)
    assert (await get(alice, made.contact_id)).subscriber == ""
    # A new subscriber of the same name is nobody's contact: alice's old
    # link does not let the new bob see her presence.
    await add_subscriber(core, "bob")
    bob = await Device.login(core, channel, "bob", connect=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bob.get("alice")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
