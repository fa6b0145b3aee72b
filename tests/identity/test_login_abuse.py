"""Login abuse against a real core over gRPC: concurrency does not bypass the
throttle, floods cannot exhaust the password checks, and nobody can lock a
user out by failing for them from elsewhere (issue 14, items 1 and 4).

Client addresses come from x-forwarded-for, believed from 127.0.0.1 here
(trusted_proxies), as the core believes Envoy and the WAPI edge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from core.identity.passwords import Passwords
from core.identity.store import IdentityStore
from tests.support.core import add_subscriber, running_core
from tests.support.status import retry_after
from tests.support.timing import seconds
from wac.v1 import identity_pb2, identity_pb2_grpc

OK = grpc.StatusCode.OK
WRONG = grpc.StatusCode.UNAUTHENTICATED
REFUSED = grpc.StatusCode.RESOURCE_EXHAUSTED

# Trust 127.0.0.1's x-forwarded-for, and lift the per-caller rate limit of
# native gRPC so that what refuses a login here is the login throttle.
BASE = {
    # argon2id at its real cost: these floods are about checks that take time.
    "WAC_IDENTITY_ARGON2_TIME_COST": "3",
    "WAC_IDENTITY_ARGON2_MEMORY_KIB": "65536",
    "WAC_IDENTITY_ARGON2_PARALLELISM": "4",
    "WAC_CORE_TRUSTED_PROXIES": "127.0.0.1",
    "WAC_CORE_RATE_PER_SECOND": "100000",
    "WAC_CORE_RATE_BURST": "100000",
}


class Outcome:
    def __init__(self, code: grpc.StatusCode, details: str = "", retry_after: float | None = None) -> None:
        self.code = code
        self.details = details
        self.retry_after = retry_after


async def attempt(stub: identity_pb2_grpc.IdentityServiceStub, username: str, password: str, address: str) -> Outcome:
    request = identity_pb2.LoginRequest(username=username, password=password, device_name="t")
    try:
        await stub.Login(request, metadata=(("x-forwarded-for", address),), timeout=seconds(6))
    except grpc.aio.AioRpcError as err:
        return Outcome(err.code(), err.details() or "", retry_after(err))
    return Outcome(OK)


class CheckCounter:
    """An instrumented verify_password: how many checks run at once, and the
    order in which they finish."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running = 0
        self.peak = 0
        # The same for the passwords starting "flood " alone.
        self.flood_running = 0
        self.flood_peak = 0
        self.finished: list[str] = []
        self.started = asyncio.Event()
        original = Passwords.verify

        async def verify(passwords: Passwords, password_hash: str | None, password: str) -> bool:
            flood = password.startswith("flood ")
            self.running += 1
            self.flood_running += flood
            self.peak = max(self.peak, self.running)
            self.flood_peak = max(self.flood_peak, self.flood_running)
            self.started.set()
            try:
                return await original(passwords, password_hash, password)
            finally:
                self.running -= 1
                self.flood_running -= flood
                self.finished.append(password)

        monkeypatch.setattr(Passwords, "verify", verify)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> CheckCounter:
    return CheckCounter(monkeypatch)


async def test_thirty_concurrent_logins_for_one_user_are_not_all_evaluated(
    tmp_path: Path, checks: CheckCounter
) -> None:
    # The attack: 29 wrong passwords and the right one, all at once
    # from one address. Only `throttle_after` (3) may be judged before the
    # pair must wait 30 s; the right one gets in only among those first 3
    # (a success starts the pair afresh, as any successful login does).
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "3", "WAC_IDENTITY_THROTTLE_DELAY": "30", "WAC_IDENTITY_LOCK_AFTER": "5"}
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        await add_subscriber(core, "alice")
        wrong = [attempt(stub, "alice", f"wrong password {i}", "198.51.100.7") for i in range(29)]
        outcomes = await asyncio.gather(*wrong, attempt(stub, "alice", "correct horse", "198.51.100.7"))
        codes = Counter(o.code for o in outcomes)
        assert set(codes) <= {OK, WRONG, REFUSED}
        assert codes[REFUSED] >= 20, codes
        assert all(o.retry_after for o in outcomes if o.code == REFUSED)
        # One pair's checks run one at a time: finishing order is judging order.
        if outcomes[-1].code == OK:
            assert checks.finished.index("correct horse") < 3, checks.finished
        else:
            assert codes[WRONG] <= 3 and len(checks.finished) <= 4, checks.finished
            # Nor does the right password get in afterwards: the pair waits.
            late = await attempt(stub, "alice", "correct horse", "198.51.100.7")
            assert late.code == REFUSED and "try again in" in late.details


async def test_concurrent_logins_spraying_usernames_from_one_address_are_throttled(tmp_path: Path) -> None:
    # Per-address admission lifted: what holds is the address's counter,
    # reserved atomically before each check.
    env = {
        "WAC_IDENTITY_THROTTLE_AFTER": "4",
        "WAC_IDENTITY_THROTTLE_DELAY": "30",
        "WAC_IDENTITY_MAX_LOGINS_PER_ADDRESS": "100",
        "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "100",
    }
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        outcomes = await asyncio.gather(*(attempt(stub, f"user{i}", "guess1234", "198.51.100.8") for i in range(30)))
        codes = Counter(o.code for o in outcomes)
        assert codes == {WRONG: 4, REFUSED: 26}, codes
        assert any("this client address" in o.details for o in outcomes if o.code == REFUSED)


async def test_twenty_nine_concurrent_failures_are_counted_as_twenty_nine(tmp_path: Path) -> None:
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "1000", "WAC_IDENTITY_LOCK_AFTER": "1000"}
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        await add_subscriber(core, "alice")
        outcomes = await asyncio.gather(
            *(attempt(stub, "alice", "wrong password", f"203.0.113.{i + 1}") for i in range(29))
        )
        assert Counter(o.code for o in outcomes) == {WRONG: 29}
        state = await IdentityStore(core.engine).throttle_state("user:alice")
        assert state is not None and state.failures == 29


async def test_a_flood_from_one_address_runs_few_checks_and_a_real_user_gets_in(
    tmp_path: Path, checks: CheckCounter
) -> None:
    # Thresholds high: what bounds the flood here is admission, not the throttle.
    env = {"WAC_IDENTITY_THROTTLE_AFTER": "1000", "WAC_IDENTITY_LOCK_AFTER": "1000"}
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        await add_subscriber(core, "bob", password="bob's real password")
        flood = [asyncio.create_task(attempt(stub, f"bogus{i % 7}", f"flood {i}", "198.51.100.9")) for i in range(60)]
        await asyncio.wait_for(checks.started.wait(), seconds(2))
        begun = time.monotonic()
        real = await attempt(stub, "bob", "bob's real password", "192.0.2.44")
        took = time.monotonic() - begun
        outcomes = await asyncio.gather(*flood)
        assert real.code == OK
        per_address = 2  # max_logins_per_address's default
        # At most per_address of the flood's checks at once; Bob's beside them.
        assert checks.flood_peak <= per_address
        assert core.identity.password_checks.peak <= per_address + 1
        # Bob's check did not queue behind the flood's: at most what the
        # address holds and queues (2 + login_queue_per_address's 8) went
        # before it, where all 60 did.
        flooded_before_bob = checks.finished.index("bob's real password")
        assert flooded_before_bob <= per_address + 8
        codes = Counter(o.code for o in outcomes)
        assert set(codes) <= {WRONG, REFUSED} and codes[REFUSED] >= 30
        assert all(o.retry_after for o in outcomes if o.code == REFUSED)
        assert took < seconds(1)


async def test_password_checks_are_capped_overall(tmp_path: Path, checks: CheckCounter) -> None:
    env = {
        "WAC_IDENTITY_THROTTLE_AFTER": "1000",
        "WAC_IDENTITY_LOCK_AFTER": "1000",
        "WAC_IDENTITY_MAX_PASSWORD_CHECKS": "3",
        "WAC_IDENTITY_PASSWORD_CHECK_QUEUE": "5",
    }
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        outcomes = await asyncio.gather(
            *(attempt(stub, "nobody", "guess1234", f"203.0.113.{i + 1}") for i in range(40))
        )
        codes = Counter(o.code for o in outcomes)
        assert checks.peak <= 3
        assert codes[WRONG] >= 3 and codes[REFUSED] >= 1, codes
        assert set(codes) == {WRONG, REFUSED}
        assert any("too many logins in progress" in o.details for o in outcomes if o.code == REFUSED)
        # Every refused attempt was taken back: the username's count is the
        # number of passwords actually checked.
        state = await IdentityStore(core.engine).throttle_state("user:nobody")
        assert state is not None and state.failures == codes[WRONG]


async def test_an_attacker_elsewhere_cannot_lock_a_user_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "WAC_IDENTITY_THROTTLE_AFTER": "20",
        "WAC_IDENTITY_LOCK_AFTER": "20",
        "WAC_IDENTITY_LOCK_SECONDS": "300",
        "WAC_IDENTITY_USERNAME_MAX_DELAY": "1",
    }
    caplog.set_level(logging.WARNING, logger="wac.identity")
    async with (
        running_core(tmp_path, {**BASE, **env}) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        await add_subscriber(core, "alice")
        for i in range(20):
            failed = await attempt(stub, "alice", f"attacker guess {i}", "198.51.100.66")
            assert failed.code == WRONG
        # Alice from her own address: slowed at most username_max_delay, never refused.
        begun = time.monotonic()
        mine = await attempt(stub, "alice", "correct horse", "192.0.2.10")
        assert mine.code == OK
        assert time.monotonic() - begun < 1 + seconds(1)
        # The attacker's address is refused, and told for how long.
        refused = await attempt(stub, "alice", "attacker guess 21", "198.51.100.66")
        assert refused.code == REFUSED
        assert "try again in" in refused.details
        assert refused.retry_after is not None and 290 < refused.retry_after <= 300
        # Even the right password from the attacker's address must wait.
        assert (await attempt(stub, "alice", "correct horse", "198.51.100.66")).code == REFUSED

    failures = [r for r in caplog.records if r.getMessage() == "login failed"]
    assert len(failures) >= 21
    assert all(r.levelno == logging.WARNING for r in failures)
    assert {(r.username, r.client_address) for r in failures} == {("alice", "198.51.100.66")}  # type: ignore[attr-defined]
    assert {r.reason for r in failures} >= {"wrong password", "locked"}  # type: ignore[attr-defined]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert "attacker guess" not in text and "correct horse" not in text


async def test_an_unknown_username_is_logged_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wac.identity")
    async with running_core(tmp_path, BASE) as core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        assert (await attempt(stub, "mallory", "whatever1", "198.51.100.3")).code == WRONG
    (record,) = [r for r in caplog.records if r.getMessage() == "login failed"]
    assert (record.username, record.client_address, record.reason) == (  # type: ignore[attr-defined]
        "mallory",
        "198.51.100.3",
        "unknown username",
    )
