"""Tokens signed with wac's own key are still refused unless wac could have
issued them: a lifetime within the configured TTL, an iat not in the future,
a session that was issued and not revoked. The checks cost no SQL."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from core.identity import revocations
from core.identity.store import IdentityStore, SessionRow
from core.server import Core
from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.sql import statements
from wac.v1 import identity_pb2, identity_pb2_grpc

Reason = identity_pb2.VerifyTokenResponse.Reason
DAY = 86400


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def stolen_key(core: Core) -> tuple[str, ECKey]:
    """The newest private signing key, read from the database file as a
    local attacker with read access to it would."""
    path = core.config.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        kid, jwk = db.execute("SELECT kid, private_jwk FROM signing_keys ORDER BY create_time DESC").fetchone()
    return kid, ECKey.import_key(json.loads(jwk))


def forge(core: Core, username: str, session_id: str, **claims: Any) -> str:
    kid, key = stolen_key(core)
    now = int(time.time())
    body = {"iss": "wac", "sub": username, "sid": session_id, "iat": now, "exp": now + 900, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode({"alg": "ES256", "kid": kid, "typ": "JWT"}, body, key, algorithms=["ES256"])


async def verdict(channel: grpc.aio.Channel, gateway: str, token: str) -> identity_pb2.VerifyTokenResponse:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    return await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=token), metadata=md(gateway))


async def refused_by_a_method(channel: grpc.aio.Channel, token: str) -> str:
    """The reason an authenticated method gives for refusing ``token``."""
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSubscriber(identity_pb2.GetSubscriberRequest(username="alice"), metadata=md(token))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return dict(err.value.trailing_metadata() or ()).get("reason", err.value.details())


@pytest.fixture
async def quiet(tmp_path: Path) -> AsyncIterator[Core]:
    """A core whose background poll stays out of the statements counted."""
    async with running_core(tmp_path / "quiet", {"WAC_IDENTITY_REVOCATION_POLL": "600"}) as running:
        yield running


@pytest.fixture
def core(quiet: Core, request: pytest.FixtureRequest) -> Core:
    """Every test here runs on the quiet core (the poll is tested elsewhere)."""
    return quiet


@pytest.fixture
async def gateway(core: Core) -> str:
    await add_subscriber(core, "alice")
    return await api_key(core, "gateway", "identity.verify")


async def test_the_attack_a_forged_token_for_a_session_never_issued_lasting_115_days(
    core: Core, channel, gateway
) -> None:
    now = int(time.time())
    token = forge(core, "alice", secrets.token_urlsafe(16), exp=now + 115 * DAY)
    answer = await verdict(channel, gateway, token)
    assert not answer.active and answer.reason == Reason.MALFORMED
    await refused_by_a_method(channel, token)


async def test_a_forged_token_of_normal_lifetime_for_a_session_never_issued(core: Core, channel, gateway) -> None:
    token = forge(core, "alice", secrets.token_urlsafe(16))
    answer = await verdict(channel, gateway, token)
    assert not answer.active and answer.reason == Reason.REVOKED
    await refused_by_a_method(channel, token)


async def test_a_forged_token_for_a_real_session_lasting_longer_than_the_ttl(core: Core, channel, gateway) -> None:
    session = await login(channel, "alice")
    now = int(time.time())
    token = forge(core, "alice", session.session_id, exp=now + 902)
    answer = await verdict(channel, gateway, token)
    assert not answer.active and answer.reason == Reason.MALFORMED
    await refused_by_a_method(channel, token)
    # Within the TTL (and its second of rounding) the same forgery passes:
    # what is checked is the lifetime, nothing else.
    assert (await verdict(channel, gateway, forge(core, "alice", session.session_id, exp=now + 901))).active


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iat": "FUTURE", "exp": "FUTURE+900"}, id="iat-in-the-future"),
        pytest.param({"iat": None}, id="no-iat"),
    ],
)
async def test_iat_missing_or_in_the_future_is_refused(core: Core, channel, gateway, claims: dict[str, Any]) -> None:
    session = await login(channel, "alice")
    future = int(time.time()) + 120  # beyond the 30 s leeway
    values = {
        name: (future if value == "FUTURE" else future + 900 if value == "FUTURE+900" else value)
        for name, value in claims.items()
    }
    token = forge(core, "alice", session.session_id, **values)
    answer = await verdict(channel, gateway, token)
    assert not answer.active and answer.reason == Reason.MALFORMED
    await refused_by_a_method(channel, token)


async def test_an_iat_slightly_ahead_is_accepted(core: Core, channel, gateway) -> None:
    # Another core's clock may run a little ahead of this one's.
    session = await login(channel, "alice")
    now = int(time.time())
    token = forge(core, "alice", session.session_id, iat=now + 10, exp=now + 910)
    assert (await verdict(channel, gateway, token)).active


async def test_a_logged_in_token_works_and_stops_at_logout(core: Core, channel, gateway) -> None:
    session = await login(channel, "alice")
    assert (await verdict(channel, gateway, session.access_token)).active
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    got = await stub.GetSubscriber(
        identity_pb2.GetSubscriberRequest(username="alice"), metadata=md(session.access_token)
    )
    assert got.username == "alice"
    await stub.Logout(identity_pb2.LogoutRequest(), metadata=md(session.access_token))
    answer = await verdict(channel, gateway, session.access_token)
    assert not answer.active and answer.reason == Reason.REVOKED


async def test_a_session_made_by_another_core_is_accepted_after_one_lookup(core: Core, channel, gateway) -> None:
    # Another core's login, written straight to the shared database: this
    # core has not polled it yet when its first token arrives.
    session_id = secrets.token_urlsafe(16)
    now = time.time()
    await IdentityStore(core.engine).create_session(
        SessionRow(session_id, "alice", "elsewhere", now, 0, "0" * 64, now + DAY, None, None)
    )
    token = forge(core, "alice", session_id)
    with statements() as sql:
        assert (await verdict(channel, gateway, token)).active
    assert sum("sessions" in s for s in sql) <= 1
    with statements() as sql:
        assert (await verdict(channel, gateway, token)).active
    assert not [s for s in sql if "sessions" in s]


async def test_unknown_sessions_cost_a_bounded_number_of_lookups(core: Core, channel, gateway) -> None:
    tokens = [forge(core, "alice", secrets.token_urlsafe(16)) for _ in range(60)]
    with statements() as sql:
        started = time.monotonic()
        answers = await asyncio.gather(*(verdict(channel, gateway, token) for token in tokens))
        # The same forgeries again: remembered, or refused within the budget.
        answers += await asyncio.gather(*(verdict(channel, gateway, token) for token in tokens[:20]))
        elapsed = time.monotonic() - started
    assert not any(answer.active for answer in answers)
    lookups = [s for s in sql if "FROM sessions" in s and "sessions.session_id = " in s]
    # A burst of 20, refilled at 10 per second while the test runs.
    assert 20 <= len(lookups) <= 20 + 10 * elapsed + 1, (len(lookups), elapsed)
    # Beyond it, the forgeries wait for a poll instead, started for them at
    # most every MIN_POLL_GAP seconds (each poll: two queries of sessions).
    polls = [s for s in sql if "FROM sessions" in s and "sessions.session_id = " not in s]
    assert len(polls) <= 2 * (elapsed / revocations.MIN_POLL_GAP + 1), (len(polls), elapsed)


async def test_verifying_a_known_token_issues_no_sql(core: Core, channel, gateway) -> None:
    session = await login(channel, "alice")
    assert (await verdict(channel, gateway, session.access_token)).active  # warm: key, subscriber
    with statements() as sql:
        started = time.monotonic()
        for _ in range(50):
            assert (await verdict(channel, gateway, session.access_token)).active
        elapsed = time.monotonic() - started
    # Nothing about sessions; the subscriber's record is re-read at most
    # once a second (the subscriber read-cache's staleness bound), not per
    # verification.
    assert not [s for s in sql if "sessions" in s], sql
    assert len(sql) <= int(elapsed) + 1, sql
