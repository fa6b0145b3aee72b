"""Who holds a phone number: GetPhoneNumberOwner over gRPC (the gateway's
question for every call from the trunk), and the rule behind it that a
number has one holder, on SQLite and PostgreSQL, from migration to lookup."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from core.db.engine import sync_url
from core.db.migrate import upgrade
from core.server import Core
from settings.config import sqlite_url
from settings.gatewaykey import read_gateway_key
from tests.support.core import add_subscriber, api_key, login, running_core
from wac.v1 import identity_pb2, identity_pb2_grpc

ALICE = "+34600111222"


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


async def owner(channel: grpc.aio.Channel, key: str, number: str) -> identity_pb2.PhoneNumberOwner:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    return await stub.GetPhoneNumberOwner(
        identity_pb2.GetPhoneNumberOwnerRequest(phone_number=number), metadata=bearer(key)
    )


async def refusal(channel: grpc.aio.Channel, key: str, number: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await owner(channel, key, number)
    return refused.value


@pytest.fixture
async def gateway(core: Core) -> str:
    """The key the core provisioned for the gateway, as the gateway reads it."""
    return read_gateway_key(core.config, wait=0)


@pytest.mark.parametrize("asked", [ALICE, "600 111 222", "600111222", "tel:+34600111222", "0034 600-111-222"])
async def test_the_holder_is_found_in_any_form_of_the_number(core: Core, channel, gateway: str, asked: str) -> None:
    await add_subscriber(core, "alice", phone_numbers=["600 111 222", "+44 20 7946 0958"])
    found = await owner(channel, gateway, asked)
    assert (found.phone_number, found.subscriber) == (ALICE, "alice")
    assert (await owner(channel, gateway, "+442079460958")).subscriber == "alice"


async def test_a_number_nobody_holds_is_not_found(core: Core, channel, gateway: str) -> None:
    await add_subscriber(core, "alice", phone_numbers=[ALICE])
    refused = await refusal(channel, gateway, "+34600999888")
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert refused.details() == "no subscriber holds the phone number +34600999888"


@pytest.mark.parametrize("asked", ["", "alice", "12", "+999 123", "sip:alice@example.org", "6" * 100])
async def test_what_is_not_a_number_is_invalid(core: Core, channel, gateway: str, asked: str) -> None:
    refused = await refusal(channel, gateway, asked)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("phone_number: ")


async def test_only_the_numbers_lookup_scope_or_admin_may_ask(core: Core, channel) -> None:
    await add_subscriber(core, "alice", phone_numbers=[ALICE])
    await add_subscriber(core, "root", roles=["admin"])
    for scopes in (["identity.verify"], ["subscribers.read", "subscribers.write"]):
        refused = await refusal(channel, await api_key(core, f"key-{len(scopes)}", *scopes), ALICE)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "numbers.lookup" in refused.details()
    subscriber = (await login(channel, "alice")).access_token
    assert (await refusal(channel, subscriber, ALICE)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await owner(channel, await api_key(core, "ops", "admin"), ALICE)).subscriber == "alice"
    assert (await owner(channel, (await login(channel, "root")).access_token, ALICE)).subscriber == "alice"
    assert (await owner(channel, await api_key(core, "lookup", "numbers.lookup"), ALICE)).subscriber == "alice"


async def test_taken_numbers_are_refused_naming_the_entry(core: Core, channel, gateway: str) -> None:
    admin = await api_key(core, "provisioning", "subscribers.write")
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    await add_subscriber(core, "alice", phone_numbers=[ALICE])

    async def create(**fields: object) -> identity_pb2.Subscriber:
        request = identity_pb2.CreateSubscriberRequest(subscriber=identity_pb2.Subscriber(**fields))
        return await stub.CreateSubscriber(request, metadata=bearer(admin))

    async def update(username: str, numbers: list[str]) -> identity_pb2.Subscriber:
        request = identity_pb2.UpdateSubscriberRequest(
            subscriber=identity_pb2.Subscriber(username=username, phone_numbers=numbers),
            update_mask=field_mask_pb2.FieldMask(paths=["phone_numbers"]),
        )
        return await stub.UpdateSubscriber(request, metadata=bearer(admin))

    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await create(username="bob", password="correct horse", phone_numbers=["+34600222333", "600111222"])
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert taken.value.details() == (
        "subscriber.phone_numbers[1]: the phone number +34600111222 belongs to subscriber 'alice'"
    )
    # Nothing of bob was written, not even his other number.
    assert (await refusal(channel, gateway, "+34600222333")).code() == grpc.StatusCode.NOT_FOUND
    await create(username="bob", password="correct horse", phone_numbers=["+34600222333"])
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await update("bob", ["+34600222333", ALICE])
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await owner(channel, gateway, ALICE)).subscriber == "alice"
    # A subscriber may keep (and reorder) its own numbers.
    await update("alice", ["+34600333444", ALICE])
    assert (await owner(channel, gateway, "+34600333444")).subscriber == "alice"
    # Given up, a number is free for another; deleted, a holder holds nothing.
    await update("alice", ["+34600333444"])
    assert (await refusal(channel, gateway, ALICE)).code() == grpc.StatusCode.NOT_FOUND
    await update("bob", [ALICE])
    assert (await owner(channel, gateway, ALICE)).subscriber == "bob"
    assert (await refusal(channel, gateway, "+34600222333")).code() == grpc.StatusCode.NOT_FOUND
    await stub.DeleteSubscriber(identity_pb2.DeleteSubscriberRequest(username="bob"), metadata=bearer(admin))
    assert (await refusal(channel, gateway, ALICE)).code() == grpc.StatusCode.NOT_FOUND
    await create(username="carol", password="correct horse", phone_numbers=[ALICE])
    assert (await owner(channel, gateway, ALICE)).subscriber == "carol"


async def test_the_migration_gives_each_number_to_its_earliest_holder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = sqlite_url(data)
    upgrade(url, "0003")
    engine = sa.create_engine(sync_url(url))
    subscribers = sa.table(
        "subscribers",
        *(sa.column(name) for name in ("username", "display_name", "phone_numbers", "email", "roles")),
        *(sa.column(name) for name in ("disabled", "password_hash", "create_time", "update_time")),
    )
    with engine.begin() as conn:
        for created, username, numbers in ((2.0, "bob", [ALICE, "+34600222333"]), (1.0, "alice", [ALICE])):
            conn.execute(
                subscribers.insert().values(
                    username=username,
                    display_name=username,
                    phone_numbers=json.dumps(numbers),
                    email="",
                    roles='["user"]',
                    disabled=False,
                    password_hash="x",
                    create_time=created,
                    update_time=created,
                )
            )
    engine.dispose()
    async with running_core(data) as core:
        assert core.config.database_url == url
        bob = await core.identity.find("bob")
        assert bob is not None
        assert bob.phone_numbers == ("+34600222333",)
        assert await core.identity.phone_number_owner(ALICE) == (ALICE, "alice")
        assert await core.identity.phone_number_owner("+34600222333") == ("+34600222333", "bob")


async def test_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with running_core(tmp_path / "data", {"WAC_CORE_DATABASE_URL": postgres_url}) as core:
        assert core.engine.dialect.name == "postgresql"
        await add_subscriber(core, "alice", phone_numbers=[ALICE])
        with pytest.raises(Exception, match="belongs to subscriber 'alice'"):
            await add_subscriber(core, "bob", phone_numbers=[ALICE])
        await add_subscriber(core, "bob", phone_numbers=["+34600222333"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            gateway = read_gateway_key(core.config, wait=0)
            assert (await owner(channel, gateway, "600 111 222")).subscriber == "alice"
            assert (await owner(channel, gateway, "+34600222333")).subscriber == "bob"
