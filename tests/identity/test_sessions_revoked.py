"""identity.on_sessions_revoked: what holds state for a subscriber's
sessions outside the core (the gateway's registrations) hears of every
revocation, made by this core or learnt from another's."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from core.identity.revocations import SessionsRevoked
from core.server import Core
from settings.config import sqlite_url
from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc


class Heard:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[SessionsRevoked] = []
        self._arrived = asyncio.Event()

    async def __call__(self, event: SessionsRevoked) -> None:
        self.events.append(event)
        self._arrived.set()

    async def next(self) -> SessionsRevoked:
        """The oldest event not yet taken, waiting for it if none came yet."""
        while not self.events:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), seconds())
        return self.events.pop(0)


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


@pytest.fixture
def heard(core: Core) -> Heard:
    listener = Heard()
    core.identity.on_sessions_revoked(listener)
    return listener


async def update(core: Core, **fields: object) -> None:
    await core.identity.update(identity_pb2.Subscriber(username="alice", **fields), list(fields))


async def test_every_way_of_ending_sessions_is_told(core: Core, channel: grpc.aio.Channel, heard: Heard) -> None:
    await add_subscriber(core, "alice")
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    operator = await api_key(core, "ops", "subscribers.write")

    phone, laptop = await login(channel, "alice", device="phone"), await login(channel, "alice", device="laptop")
    await stub.Logout(identity_pb2.LogoutRequest(), metadata=bearer(phone.access_token))
    event = await heard.next()
    assert (event.username, event.session_ids, event.reason) == ("alice", (phone.session_id,), "logout")
    assert not event.every_session and not event.elsewhere

    phone = await login(channel, "alice", device="phone")
    await stub.RevokeSessions(identity_pb2.RevokeSessionsRequest(username="alice"), metadata=bearer(operator))
    event = await heard.next()
    assert (event.reason, sorted(event.session_ids)) == ("revoked", sorted([phone.session_id, laptop.session_id]))
    assert event.every_session and not event.elsewhere

    # A whole-subscriber revocation is told even with no session open.
    await stub.RevokeSessions(identity_pb2.RevokeSessionsRequest(username="alice"), metadata=bearer(operator))
    event = await heard.next()
    assert (event.reason, event.session_ids, event.every_session) == ("revoked", (), True)

    for fields, reason in (({"password": "another horse"}, "password_changed"), ({"disabled": True}, "disabled")):
        session = await login(channel, "alice", password="another horse" if reason == "disabled" else "correct horse")
        await update(core, **fields)
        event = await heard.next()
        assert (event.reason, event.session_ids, event.every_session) == (reason, (session.session_id,), True)

    await update(core, disabled=False)
    session = await login(channel, "alice", password="another horse")
    await stub.DeleteSubscriber(identity_pb2.DeleteSubscriberRequest(username="alice"), metadata=bearer(operator))
    event = await heard.next()
    assert (event.reason, event.session_ids, event.every_session) == ("deleted", (session.session_id,), True)
    assert heard.events == []  # nothing else was told: re-enabling ends no session


async def test_a_failing_listener_neither_fails_the_revocation_nor_silences_the_others(
    core: Core, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(event: SessionsRevoked) -> None:
        raise RuntimeError("the gateway is down")

    core.identity.on_sessions_revoked(broken)
    after = Heard()
    core.identity.on_sessions_revoked(after)
    await add_subscriber(core, "alice")
    session = await login(channel, "alice")
    operator = await api_key(core, "ops", "subscribers.write")
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    answer = await stub.RevokeSessions(identity_pb2.RevokeSessionsRequest(username="alice"), metadata=bearer(operator))
    assert answer.revoked_count == 1
    assert (await after.next()).session_ids == (session.session_id,)
    failed = [r for r in caplog.records if r.getMessage() == "a sessions-revoked listener failed"]
    assert failed and failed[0].levelno == logging.ERROR and failed[0].exc_info


async def test_a_revocation_made_by_another_core_is_told_from_the_poll(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    shared = {"WAC_CORE_DATABASE_URL": sqlite_url(tmp_path / "one")}
    async with (
        running_core(tmp_path / "one") as one,
        running_core(tmp_path / "two", shared) as two,
        grpc.aio.insecure_channel(f"127.0.0.1:{one.port}") as channel,
    ):
        heard = Heard()
        one.identity.on_sessions_revoked(heard)
        await add_subscriber(one, "alice")
        session = await login(channel, "alice")
        await two.identity.update(identity_pb2.Subscriber(username="alice", disabled=True), ["disabled"])
        event = await heard.next()  # within the poll (0.2 s in tests)
        assert (event.username, event.session_ids, event.reason) == ("alice", (session.session_id,), "disabled")
        assert event.elsewhere and event.every_session
