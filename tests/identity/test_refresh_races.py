"""Refreshes racing with one refresh token, and their rate (issue 14, item
13), against a real core over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from core.clock import SYSTEM_CLOCK, Clock
from core.server import Core
from settings.config import sqlite_url
from tests.support.clock import FakeClock
from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.status import retry_after
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc

Reason = identity_pb2.VerifyTokenResponse.Reason
BASE = {"WAC_CORE_RATE_PER_SECOND": "100000", "WAC_CORE_RATE_BURST": "100000"}


async def refresh(
    stub: identity_pb2_grpc.IdentityServiceStub, token: str
) -> identity_pb2.Session | grpc.aio.AioRpcError:
    try:
        return await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=token))
    except grpc.aio.AioRpcError as err:
        return err


async def active(stub: identity_pb2_grpc.IdentityServiceStub, gateway: str, access_token: str) -> bool:
    verdict = await stub.VerifyToken(
        identity_pb2.VerifyTokenRequest(token=access_token), metadata=(("authorization", f"Bearer {gateway}"),)
    )
    return bool(verdict.active)


class Setup:
    def __init__(self, core: Core, stub: identity_pb2_grpc.IdentityServiceStub, gateway: str) -> None:
        self.core = core
        self.stub = stub
        self.gateway = gateway


@asynccontextmanager
async def setup(
    tmp_path: Path, env: dict[str, str], clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[tuple[Setup, grpc.aio.Channel]]:
    async with (
        running_core(tmp_path, {**BASE, **env}, clock=clock) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        await add_subscriber(core, "alice")
        gateway = await api_key(core, "gateway", "identity.verify")
        yield Setup(core, identity_pb2_grpc.IdentityServiceStub(channel), gateway), channel


@pytest.fixture
async def racing(tmp_path: Path) -> AsyncIterator[tuple[Setup, grpc.aio.Channel]]:
    # No rate limit here: the new token is used at once to show it is live.
    async with setup(tmp_path, {"WAC_IDENTITY_REFRESH_MIN_INTERVAL": "0"}) as pair:
        yield pair


async def test_ten_concurrent_refreshes_with_one_token_keep_the_session(racing: tuple[Setup, grpc.aio.Channel]) -> None:
    s, channel = racing
    session = await login(channel, "alice")
    answers = await asyncio.gather(*(refresh(s.stub, session.refresh_token) for _ in range(10)))
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    sessions = [a for a in answers if isinstance(a, identity_pb2.Session)]
    # None is told "revoked"; those that lost the race get the winner's answer.
    assert not [e for e in errors if "revoked" in (e.details() or "")], [e.details() for e in errors]
    assert all(e.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE) for e in errors)
    assert sessions and all(a == sessions[0] for a in sessions)
    assert sessions[0].session_id == session.session_id
    assert sessions[0].refresh_token != session.refresh_token
    assert await active(s.stub, s.gateway, sessions[0].access_token)
    # Whichever copy the client kept is the current token.
    renewed = await refresh(s.stub, sessions[0].refresh_token)
    assert isinstance(renewed, identity_pb2.Session)
    assert await active(s.stub, s.gateway, renewed.access_token)


async def test_a_true_reuse_after_the_grace_still_revokes(tmp_path: Path) -> None:
    env = {"WAC_IDENTITY_REFRESH_REUSE_GRACE": "0", "WAC_IDENTITY_REFRESH_MIN_INTERVAL": "0"}
    async with setup(tmp_path, env) as (s, channel):
        session = await login(channel, "alice")
        renewed = await refresh(s.stub, session.refresh_token)
        assert isinstance(renewed, identity_pb2.Session)
        stolen = await refresh(s.stub, session.refresh_token)
        assert isinstance(stolen, grpc.aio.AioRpcError)
        assert stolen.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "already used; the session is revoked" in (stolen.details() or "")
        assert not await active(s.stub, s.gateway, renewed.access_token)


async def test_refreshes_are_rate_limited_per_session(tmp_path: Path) -> None:
    clock = FakeClock()
    async with setup(tmp_path, {"WAC_IDENTITY_REFRESH_MIN_INTERVAL": "0.5"}, clock) as (s, channel):
        session = await login(channel, "alice")
        other = await login(channel, "alice", device="phone")
        first = await refresh(s.stub, session.refresh_token)
        assert isinstance(first, identity_pb2.Session)
        too_soon = await refresh(s.stub, first.refresh_token)
        assert isinstance(too_soon, grpc.aio.AioRpcError)
        assert too_soon.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "try again in" in (too_soon.details() or "")
        wait = retry_after(too_soon)
        assert wait is not None and 0 < wait <= 0.5
        # The limit is the session's own: another session of the same
        # subscriber refreshes, and the limited one was not harmed.
        assert isinstance(await refresh(s.stub, other.refresh_token), identity_pb2.Session)
        assert await active(s.stub, s.gateway, first.access_token)
        await clock.advance(wait)  # the delay the server asked for
        later = await refresh(s.stub, first.refresh_token)
        assert isinstance(later, identity_pb2.Session)
        assert later.session_id == session.session_id


async def test_refreshes_racing_on_two_cores_never_revoke(tmp_path: Path) -> None:
    # Two cores on one database (the second's data dir is its own, its
    # database the first's): the conditional update settles the race.
    shared = {**BASE, "WAC_CORE_DATABASE_URL": sqlite_url(tmp_path / "one")}
    (tmp_path / "one").mkdir()
    async with (
        running_core(tmp_path / "one", BASE) as one,
        running_core(tmp_path / "two", shared) as two,
        grpc.aio.insecure_channel(f"127.0.0.1:{one.port}") as a,
        grpc.aio.insecure_channel(f"127.0.0.1:{two.port}") as b,
    ):
        await add_subscriber(one, "alice")
        gateway = await api_key(one, "gateway", "identity.verify")
        session = await login(a, "alice")
        stubs = [identity_pb2_grpc.IdentityServiceStub(a), identity_pb2_grpc.IdentityServiceStub(b)]
        answers = await asyncio.gather(*(refresh(stubs[i % 2], session.refresh_token) for i in range(10)))
        errors = [x for x in answers if isinstance(x, grpc.aio.AioRpcError)]
        sessions = [x for x in answers if isinstance(x, identity_pb2.Session)]
        assert sessions
        assert not [e for e in errors if "revoked" in (e.details() or "")], [e.details() for e in errors]
        # The losers are told to retry: the race (ABORTED) or the rate (RESOURCE_EXHAUSTED).
        assert {e.code() for e in errors} <= {grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        for answer in sessions:
            assert answer.session_id == session.session_id
            assert await active(stubs[0], gateway, answer.access_token)


async def test_a_race_is_not_a_reuse_even_without_a_grace(tmp_path: Path) -> None:
    env = {"WAC_IDENTITY_REFRESH_REUSE_GRACE": "0", "WAC_IDENTITY_REFRESH_MIN_INTERVAL": "0"}
    async with setup(tmp_path, env) as (s, channel):
        identity = s.core.identity
        # Hold the first rotation until all ten refreshes have arrived, so
        # that they truly overlap (gRPC may deliver late ones after it).
        arrivals = 0
        all_arrived = asyncio.Event()
        sessions = identity._sessions
        hold = sessions._refresh_locks.hold
        rotate = identity._store.rotate_refresh

        def counted_hold(key: str) -> Any:
            nonlocal arrivals
            arrivals += 1
            if arrivals == 10:
                all_arrived.set()
            return hold(key)

        async def held_rotate(*args: Any) -> bool:
            await asyncio.wait_for(all_arrived.wait(), seconds(1))
            return bool(await rotate(*args))

        sessions._refresh_locks.hold = counted_hold
        identity._store.rotate_refresh = held_rotate
        session = await login(channel, "alice")
        answers = await asyncio.gather(*(refresh(s.stub, session.refresh_token) for _ in range(10)))
        assert all(isinstance(a, identity_pb2.Session) for a in answers), answers
        assert all(a == answers[0] for a in answers)
        assert await active(s.stub, s.gateway, answers[0].access_token)
        # Once answered, the same token again is theft: no grace was given.
        stolen = await refresh(s.stub, session.refresh_token)
        assert isinstance(stolen, grpc.aio.AioRpcError) and "revoked" in (stolen.details() or "")
        assert not await active(s.stub, s.gateway, answers[0].access_token)
