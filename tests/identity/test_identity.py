"""IdentityService over a real gRPC socket: every path a user can meet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from joserfc import jwt
from joserfc.jwk import KeySet

from core.server import Core
from tests.calls.support import eventually
from tests.support.clock import FakeClock
from tests.support.core import add_subscriber, api_key, login, running_core
from tests.support.status import field_violations
from wac.v1 import events_pb2, events_pb2_grpc, identity_pb2, identity_pb2_grpc

# Less than any fake interval a test measures, more than float rounding.
TICK = 0.001

Reason = identity_pb2.VerifyTokenResponse.Reason


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> identity_pb2_grpc.IdentityServiceStub:
    return identity_pb2_grpc.IdentityServiceStub(channel)


@pytest.fixture
async def gateway(core: Core) -> str:
    return await api_key(core, "gateway", "identity.verify")


@pytest.fixture
async def admin(core: Core) -> str:
    return await api_key(core, "provisioning", "subscribers.read", "subscribers.write")


async def test_login_returns_a_session_whose_token_verifies(core: Core, channel, stub, gateway) -> None:
    await add_subscriber(core, "alice", phone_numbers=["600 111 222"], email="alice@example.org")
    session = await login(channel, "alice", device="laptop")
    assert session.subscriber.username == "alice"
    assert list(session.subscriber.phone_numbers) == ["+34600111222"]
    assert session.device_name == "laptop"
    assert session.expire_time.seconds - time.time() == pytest.approx(900, abs=5)
    verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=session.access_token), metadata=md(gateway))
    assert verdict.active
    assert verdict.session_id == session.session_id
    assert verdict.subscriber.username == "alice"
    assert "call.audio" in verdict.permissions
    assert verdict.expire_time == session.expire_time


async def test_wrong_password_and_unknown_user_look_the_same(core: Core, channel) -> None:
    await add_subscriber(core, "alice")
    for username, password in (("alice", "wrong password"), ("nobody", "whatever1")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await login(channel, username, password)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == "wrong username or password"


async def test_a_burst_of_wrong_passwords_is_throttled_then_locked(tmp_path: Path) -> None:
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "3", "WAC_IDENTITY_THROTTLE_DELAY": "30", "WAC_IDENTITY_LOCK_AFTER": "4"}
    async with running_core(tmp_path, env) as core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        await add_subscriber(core, "alice")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await login(channel, "alice", "wrong password")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Even the right password must wait now: the error says for how long.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await login(channel, "alice")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many failed logins" in err.value.details()
        assert "try again in" in err.value.details()


async def test_lockout_after_many_failures(tmp_path: Path) -> None:
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "100", "WAC_IDENTITY_LOCK_AFTER": "3", "WAC_IDENTITY_LOCK_SECONDS": "600"}
    async with running_core(tmp_path, env) as core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        await add_subscriber(core, "alice")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await login(channel, "alice", "wrong password")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await login(channel, "alice")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        seconds = int(err.value.details().split("try again in ")[1].split(" ")[0])
        assert 590 <= seconds <= 601


async def test_expired_token_is_inactive_and_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    async with (
        running_core(tmp_path, {"WAC_IDENTITY_ACCESS_TOKEN_TTL": "1"}, clock=clock) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        await add_subscriber(core, "alice")
        key = await api_key(core, "gw", "identity.verify")
        session = await login(channel, "alice")
        await clock.advance(2.1)
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=session.access_token), metadata=md(key))
        assert not verdict.active
        assert verdict.reason == Reason.EXPIRED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSubscriber(
                identity_pb2.GetSubscriberRequest(username="alice"), metadata=md(session.access_token)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in err.value.details()
        # The refresh token still works and gives a fresh access token.
        renewed = await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
        me = await stub.GetSubscriber(
            identity_pb2.GetSubscriberRequest(username="alice"), metadata=md(renewed.access_token)
        )
        assert me.username == "alice"


async def test_tampered_and_malformed_tokens(core: Core, channel, stub, gateway) -> None:
    await add_subscriber(core, "alice")
    session = await login(channel, "alice")
    header, payload, signature = session.access_token.split(".")
    claims = json.loads(_b64decode(payload))
    claims["sub"] = "mallory"
    forged = ".".join([header, _b64encode(json.dumps(claims).encode()), signature])
    cases = {
        forged: Reason.INVALID_SIGNATURE,
        session.access_token[:-6] + "AAAAAA": Reason.INVALID_SIGNATURE,
        "not-a-token": Reason.MALFORMED,
        "a.b.c": Reason.MALFORMED,
    }
    for token, reason in cases.items():
        verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=token), metadata=md(gateway))
        assert (verdict.active, verdict.reason) == (False, reason), token
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Logout(identity_pb2.LogoutRequest(), metadata=md(forged))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_logout_and_revocation(core: Core, channel, stub, gateway, admin) -> None:
    await add_subscriber(core, "alice")
    first = await login(channel, "alice", device="phone")
    second = await login(channel, "alice", device="laptop")
    await stub.Logout(identity_pb2.LogoutRequest(), metadata=md(first.access_token))
    verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=first.access_token), metadata=md(gateway))
    assert (verdict.active, verdict.reason) == (False, Reason.REVOKED)
    assert (
        await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=second.access_token), metadata=md(gateway))
    ).active

    # The laptop is listening: revoking all sessions tells it, then ends its stream.
    events = events_pb2_grpc.EventsServiceStub(channel).Subscribe(
        events_pb2.SubscribeRequest(), metadata=md(second.access_token)
    )
    answer = await stub.RevokeSessions(identity_pb2.RevokeSessionsRequest(username="alice"), metadata=md(admin))
    assert answer.revoked_count == 1
    received = [event async for event in events]
    # Its own presence may change first (the other device logged out); the
    # revocation is the last event, and the stream ends after it.
    assert received[-1].WhichOneof("payload") == "session_revoked"
    assert received[-1].session_revoked.reason == "revoked"
    verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=second.access_token), metadata=md(gateway))
    assert (verdict.active, verdict.reason) == (False, Reason.REVOKED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=second.refresh_token))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_revocation_reaches_another_core_within_a_second(tmp_path: Path) -> None:
    """Two cores on one database: a revocation on one is seen by the other
    at its next revocation poll (every 0.2 s in tests, 0.5 s by default)."""
    clock = FakeClock()
    async with running_core(tmp_path, clock=clock) as one, running_core(tmp_path, clock=clock) as two:
        poll = two.config.identity.revocation_poll
        assert poll <= 1.0
        await add_subscriber(one, "alice")
        key = await api_key(one, "gw", "identity.verify")
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{one.port}") as a,
            grpc.aio.insecure_channel(f"127.0.0.1:{two.port}") as b,
        ):
            session = await login(a, "alice")
            on_two = identity_pb2_grpc.IdentityServiceStub(b)
            request = identity_pb2.VerifyTokenRequest(token=session.access_token)
            assert (await on_two.VerifyToken(request, metadata=md(key))).active
            await identity_pb2_grpc.IdentityServiceStub(a).Logout(
                identity_pb2.LogoutRequest(), metadata=md(session.access_token)
            )
            await clock.advance(poll - TICK)
            assert (await on_two.VerifyToken(request, metadata=md(key))).active, "no poll has run yet"
            await clock.advance(TICK)

            async def revoked() -> bool:
                return not (await on_two.VerifyToken(request, metadata=md(key))).active

            await eventually(revoked)  # the poll's query runs in the store's thread


async def test_disabled_subscriber(core: Core, channel, stub, gateway, admin) -> None:
    await add_subscriber(core, "alice")
    session = await login(channel, "alice")
    await stub.UpdateSubscriber(
        identity_pb2.UpdateSubscriberRequest(
            subscriber=identity_pb2.Subscriber(username="alice", disabled=True),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
        ),
        metadata=md(admin),
    )
    verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=session.access_token), metadata=md(gateway))
    assert (verdict.active, verdict.reason) == (False, Reason.DISABLED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(channel, "alice")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "disabled" in err.value.details()


async def test_reused_refresh_token_revokes_the_session(tmp_path: Path) -> None:
    async with (
        running_core(tmp_path, {"WAC_IDENTITY_REFRESH_REUSE_GRACE": "0"}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        gateway = await api_key(core, "gw", "identity.verify")
        await add_subscriber(core, "alice")
        session = await login(channel, "alice")
        renewed = await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
        assert renewed.session_id == session.session_id
        assert renewed.refresh_token != session.refresh_token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "already used" in err.value.details()
        # The thief's copy and the owner's both stop working.
        verdict = await stub.VerifyToken(
            identity_pb2.VerifyTokenRequest(token=renewed.access_token), metadata=md(gateway)
        )
        assert (verdict.active, verdict.reason) == (False, Reason.REVOKED)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=renewed.refresh_token))
        for bad in ("garbage", f"{session.session_id}.x.y", "nosuchsession.0.secret"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=bad))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_lost_refresh_answer_may_be_retried_within_the_grace(core: Core, channel, stub, gateway) -> None:
    await add_subscriber(core, "alice")
    session = await login(channel, "alice")
    lost = await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
    retried = await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
    assert retried.session_id == session.session_id
    # The same question within the grace gets the same answer: whichever
    # copy the client keeps is the current one (no rotation, no revocation).
    assert retried == lost
    again = await stub.RefreshSession(identity_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
    assert again == lost
    verdict = await stub.VerifyToken(identity_pb2.VerifyTokenRequest(token=retried.access_token), metadata=md(gateway))
    assert verdict.active


async def test_api_keys_and_scopes(core: Core, stub, gateway) -> None:
    request = identity_pb2.GetSubscriberRequest(username="alice")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSubscriber(request)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing credentials" in err.value.details()
    for wrong in ("wac_0123456789abcdef_nope", "not-a-key", gateway + "x"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSubscriber(request, metadata=md(wrong))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown or revoked API key" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSubscriber(request, metadata=md(gateway))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "subscribers.read" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSubscriber(request, metadata=(("authorization", "Basic abc"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_subscriber_crud_and_validation(core: Core, channel, stub, admin) -> None:
    create = stub.CreateSubscriber
    made = await create(
        identity_pb2.CreateSubscriberRequest(
            subscriber=identity_pb2.Subscriber(
                username="carol", password="longenough", display_name="Carol", phone_numbers=["+44 20 7946 0958"]
            )
        ),
        metadata=md(admin),
    )
    assert made.username == "carol" and not made.password
    assert list(made.phone_numbers) == ["+442079460958"]
    assert made.roles == ["user"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(
            identity_pb2.CreateSubscriberRequest(
                subscriber=identity_pb2.Subscriber(username="carol", password="longenough")
            ),
            metadata=md(admin),
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    bad_inputs = {
        "subscriber.username": identity_pb2.Subscriber(username="Bad Name", password="longenough"),
        "subscriber.password": identity_pb2.Subscriber(username="dave", password="short"),
        "subscriber.phone_numbers[0]": identity_pb2.Subscriber(
            username="dave", password="longenough", phone_numbers=["12"]
        ),
        "subscriber.email": identity_pb2.Subscriber(username="dave", password="longenough", email="not-an-email"),
        "subscriber.display_name": identity_pb2.Subscriber(
            username="dave", password="longenough", display_name="x" * 129
        ),
        "subscriber.roles": identity_pb2.Subscriber(username="dave", password="longenough", roles=["wizard"]),
    }
    for field, subscriber in bad_inputs.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(identity_pb2.CreateSubscriberRequest(subscriber=subscriber), metadata=md(admin))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert err.value.details().startswith(field), err.value.details()
        assert field_violations(err.value) == [field]

    updated = await stub.UpdateSubscriber(
        identity_pb2.UpdateSubscriberRequest(
            subscriber=identity_pb2.Subscriber(username="carol", display_name="Carol C.", email="carol@example.org"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md(admin),
    )
    assert (updated.display_name, updated.email) == ("Carol C.", "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateSubscriber(
            identity_pb2.UpdateSubscriberRequest(
                subscriber=identity_pb2.Subscriber(username="carol"),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
            ),
            metadata=md(admin),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in err.value.details()

    await stub.DeleteSubscriber(identity_pb2.DeleteSubscriberRequest(username="carol"), metadata=md(admin))
    for call, request in (
        (stub.GetSubscriber, identity_pb2.GetSubscriberRequest(username="carol")),
        (stub.DeleteSubscriber, identity_pb2.DeleteSubscriberRequest(username="carol")),
        (stub.RevokeSessions, identity_pb2.RevokeSessionsRequest(username="carol")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=md(admin))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'carol' does not exist" in err.value.details()


async def test_oversized_fields_are_refused(core: Core, channel, stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await login(channel, "a" * 65, "whatever1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("username")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Login(identity_pb2.LoginRequest(username="alice", password="x" * 2_000_000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_list_subscribers_pages(core: Core, stub, admin) -> None:
    for index in range(7):
        await add_subscriber(core, f"user{index}")
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListSubscribers(
            identity_pb2.ListSubscribersRequest(page_size=3, page_token=token), metadata=md(admin)
        )
        assert len(page.subscribers) <= 3
        seen += [s.username for s in page.subscribers]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"user{i}" for i in range(7)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListSubscribers(identity_pb2.ListSubscribersRequest(page_token="%%%"), metadata=md(admin))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_subscribers_read_only_themselves(core: Core, channel, stub) -> None:
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    session = await login(channel, "alice")
    me = await stub.GetSubscriber(
        identity_pb2.GetSubscriberRequest(username="alice"), metadata=md(session.access_token)
    )
    assert me.username == "alice"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetSubscriber(identity_pb2.GetSubscriberRequest(username="bob"), metadata=md(session.access_token))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListSubscribers(identity_pb2.ListSubscribersRequest(), metadata=md(session.access_token))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_jwks_verifies_tokens_offline(core: Core, channel, stub, gateway) -> None:
    await add_subscriber(core, "alice")
    session = await login(channel, "alice")
    jwks = await stub.GetJwks(identity_pb2.GetJwksRequest(), metadata=md(gateway))
    keys = KeySet.import_key_set(
        {
            "keys": [
                {
                    k: v
                    for k, v in (
                        ("kty", j.kty),
                        ("crv", j.crv),
                        ("x", j.x),
                        ("y", j.y),
                        ("kid", j.kid),
                        ("use", j.use),
                        ("alg", j.alg),
                    )
                    if v
                }
                for j in jwks.keys
            ]
        }
    )
    decoded = jwt.decode(session.access_token, keys, algorithms=["ES256"])
    assert decoded.claims["sub"] == "alice"
    assert decoded.claims["sid"] == session.session_id
    assert all(not hasattr(j, "d") or not getattr(j, "d", "") for j in jwks.keys)


async def test_authorize_pstn_by_prefix(tmp_path: Path) -> None:
    config = tmp_path / "wac.toml"
    config.write_text('[roles.spain]\npermissions = ["call.audio", "call.pstn:+34"]\n')
    async with (
        running_core(tmp_path / "data", {"WAC_CONFIG": str(config)}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        await add_subscriber(core, "alice", roles=["spain"])
        await add_subscriber(core, "bob")
        key = await api_key(core, "gw", "identity.verify")
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        alice = await login(channel, "alice")
        bob = await login(channel, "bob")

        async def ask(token: str, action: str, target: str) -> identity_pb2.AuthorizeResponse:
            request = identity_pb2.AuthorizeRequest(token=token, action=action, target=target)
            return await stub.Authorize(request, metadata=md(key))

        assert (await ask(alice.access_token, "call.pstn", "+34600111222")).allowed
        denied = await ask(alice.access_token, "call.pstn", "+33612345678")
        assert not denied.allowed and "+34" in denied.reason
        assert not (await ask(bob.access_token, "call.pstn", "+34600111222")).allowed
        assert (await ask(bob.access_token, "call.video", "")).allowed
        assert not (await ask(alice.access_token, "call.video", "")).allowed
        inactive = await ask("a.b.c", "call.audio", "")
        assert not inactive.allowed and "MALFORMED" in inactive.reason
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Authorize(identity_pb2.AuthorizeRequest(token=alice.access_token), metadata=md(key))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "action: is required"


def _b64decode(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
