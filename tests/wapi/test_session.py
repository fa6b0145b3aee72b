"""edges.wapi.session: the binding and the rate limiter, with a fake clock."""

from __future__ import annotations

import pytest

from edges.wapi.methods import MethodTable
from edges.wapi.rpc import RpcError
from edges.wapi.session import Binding, RateLimiter, Verdict, token_refused

TABLE = MethodTable.for_package()


def verdicts(limiter: RateLimiter, times: list[float]) -> list[str]:
    return [limiter.check(t).verdict.value[0] for t in times]


def test_burst_then_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3, flood_after=100, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "a", "r"]
    assert limiter.check(0.0).retry_after == pytest.approx(0.5)
    assert verdicts(limiter, [0.5, 0.5]) == ["a", "r"]
    assert verdicts(limiter, [10.0] * 4) == ["a", "a", "a", "r"]  # refills to burst, no further


def test_flood_closes_after_consecutive_rejections() -> None:
    limiter = RateLimiter(rate=1, burst=2, flood_after=3, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "r", "r"]
    # An admitted request in between does not forgive a sustained flood.
    assert verdicts(limiter, [1.0, 1.0]) == ["a", "c"]


def test_a_pause_that_refills_the_bucket_forgives() -> None:
    limiter = RateLimiter(rate=1, burst=2, flood_after=3, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "r", "r"]
    assert verdicts(limiter, [5, 5, 5, 5]) == ["a", "a", "r", "r"]
    assert limiter.check(5).verdict is Verdict.CLOSE


def test_clock_going_backwards_is_harmless() -> None:
    limiter = RateLimiter(rate=1, burst=1, flood_after=10, now=10.0)
    assert verdicts(limiter, [10, 5, 10.5, 11]) == ["a", "r", "r", "a"]


@pytest.mark.parametrize("bad", [{"rate": 0}, {"burst": 0}, {"flood_after": 0}])
def test_bounds(bad: dict[str, float]) -> None:
    options = {"rate": 1.0, "burst": 1, "flood_after": 1, "now": 0.0, **bad}
    with pytest.raises(ValueError):
        RateLimiter(**options)  # type: ignore[arg-type]


def test_binding() -> None:
    login = TABLE.get("IdentityService.Login")
    get = TABLE.get("IdentityService.GetSubscriber")
    assert login and get
    binding = Binding("")
    assert not binding.bound
    assert binding.credential_for(login, hint="h") is None
    with pytest.raises(RpcError) as raised:
        binding.credential_for(get, hint="log in first")
    assert raised.value.code == 16 and raised.value.message == "not logged in: log in first"
    binding.bind({"accessToken": "t1", "sessionId": "s1"})
    assert binding.credential_for(get, hint="h") == "t1"
    assert binding.credential_for(login, hint="h") is None  # a dead token never blocks a fresh login
    binding.bind({"accessToken": "t2", "sessionId": "s1"})
    assert binding.token == "t2"
    binding.bind({})  # not a session: ignored
    assert binding.token == "t2"


def test_token_refused_only_when_the_call_carried_the_token() -> None:
    unauthenticated = RpcError(16, "revoked")
    assert token_refused(unauthenticated, "t")
    assert not token_refused(unauthenticated, None)
    assert not token_refused(RpcError(7, "denied"), "t")
