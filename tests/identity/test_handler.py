"""The identity handler without a server, on a real store and the fake
clock: token expiry, a username's slowed logins and the signing key's
rotation, to the instant and without sleeping."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from core.failures import Unauthenticated
from core.identity.handler import IdentityHandler
from core.identity.results import Inactive, Verified
from core.server import identity_with_followers
from tests.support import core as support
from tests.support.clock import FakeClock
from tests.support.timing import seconds
from wac.v1 import identity_pb2

PASSWORD = "correct horse"


@asynccontextmanager
async def handler(
    data_dir: Path, clock: FakeClock, env: Mapping[str, str] | None = None
) -> AsyncIterator[IdentityHandler]:
    """A started handler on the data dir's database, as the core builds it."""
    config = support.test_config(data_dir, env)
    await asyncio.to_thread(upgrade, config.database_url)
    engine = create_engine(config.database_url)
    identity, _ = identity_with_followers(config, engine, clock=clock)
    await identity.start()
    try:
        yield identity
    finally:
        await identity.stop()
        await dispose(engine)


class WatchedClock(FakeClock):
    """The fake clock, telling who starts to sleep on it for how long (a
    sleep starts after the store's writes, which take real time)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping: defaultdict[float, asyncio.Event] = defaultdict(asyncio.Event)

    async def sleep(self, delay: float) -> None:
        self.sleeping[delay].set()
        await super().sleep(delay)


async def test_an_access_token_expires_at_its_instant(tmp_path: Path) -> None:
    clock = FakeClock()
    async with handler(tmp_path, clock, {"WAC_IDENTITY_ACCESS_TOKEN_TTL": "60"}) as identity:
        await identity.create(identity_pb2.Subscriber(username="alice", password=PASSWORD))
        session = await identity.login("alice", PASSWORD, "laptop", "192.0.2.1")
        assert session.expire_time == clock.time() + 60
        await clock.advance(59.5)
        assert isinstance(await identity.verify_token(session.access_token), Verified)
        await clock.advance(0.5)
        assert await identity.verify_token(session.access_token) is Inactive.EXPIRED
        with pytest.raises(Unauthenticated) as refused:
            await identity.authenticate(session.access_token)
        assert refused.value.reason == "EXPIRED"
        assert refused.value.message == "the access token has expired; refresh the session"


async def test_failures_from_anywhere_slow_a_username_by_the_throttle_delay(tmp_path: Path) -> None:
    clock = WatchedClock()
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "3", "WAC_IDENTITY_THROTTLE_DELAY": "2"}
    async with handler(tmp_path, clock, env) as identity:
        await identity.create(identity_pb2.Subscriber(username="alice", password=PASSWORD))
        for n in range(3):  # each from its own address: only the username's count grows
            with pytest.raises(Unauthenticated):
                await identity.login("alice", "wrong password", "", f"198.51.100.{n + 1}")
        # The fourth attempt, the right password from a fresh address, waits
        # the delay (2 s, undoubled at the third failure) and then succeeds.
        login = asyncio.create_task(identity.login("alice", PASSWORD, "", "192.0.2.7"))
        await asyncio.wait_for(clock.sleeping[2.0].wait(), seconds(5))
        await clock.advance(1.9)
        assert not login.done()
        await clock.advance(0.1)
        session = await asyncio.wait_for(login, 10)
        assert session.subscriber.username == "alice"


async def test_the_signing_key_rotates_after_its_days_and_old_tokens_still_verify(tmp_path: Path) -> None:
    clock = FakeClock()
    env = {"WAC_IDENTITY_KEY_ROTATION_DAYS": "30"}
    async with handler(tmp_path, clock, env) as identity:
        await identity.create(identity_pb2.Subscriber(username="alice", password=PASSWORD))
        first_kids = {key["kid"] for key in identity.jwks()}
    await clock.advance(30 * 86400 - 1)
    async with handler(tmp_path, clock, env) as identity:
        assert {key["kid"] for key in identity.jwks()} == first_kids  # not yet due
        old = await identity.login("alice", PASSWORD, "", "192.0.2.1")
    await clock.advance(2)
    async with handler(tmp_path, clock, env) as identity:
        kids = {key["kid"] for key in identity.jwks()}
        assert first_kids < kids and len(kids) == 2  # a new key signs; the old one still verifies
        assert isinstance(await identity.verify_token(old.access_token), Verified)
        new = await identity.login("alice", PASSWORD, "", "192.0.2.1")
        assert new.access_token.split(".")[0] != old.access_token.split(".")[0]  # another kid in the header
