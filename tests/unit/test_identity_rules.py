"""Identity rules without a server: permissions, PSTN prefixes, throttling."""

from __future__ import annotations

import pytest

from core import errors
from core.identity import rules


def test_permissions_are_the_union_of_the_roles() -> None:
    role_map = {"user": ("call.audio", "presence.publish"), "pstn": ("call.pstn:+34",)}
    assert rules.permissions_for(["user", "pstn"], role_map) == {"call.audio", "presence.publish", "call.pstn:+34"}
    assert rules.permissions_for(["unknown"], role_map) == frozenset()


@pytest.mark.parametrize(
    ("permissions", "target", "allowed"),
    [
        ({"call.pstn"}, "+33612345678", True),
        ({"call.pstn:+34"}, "+34600111222", True),
        ({"call.pstn:+34"}, "tel:+34600111222", True),
        ({"call.pstn:+34"}, "+33612345678", False),
        ({"call.pstn:+34", "call.pstn:+33"}, "+33612345678", True),
        ({"call.audio"}, "+34600111222", False),
        ({"admin"}, "+1555", True),
    ],
)
def test_pstn_prefixes(permissions: set[str], target: str, allowed: bool) -> None:
    assert rules.authorize(frozenset(permissions), "call.pstn", target).allowed is allowed


def test_denial_names_what_is_missing() -> None:
    assert rules.authorize(frozenset(), "call.video", "").reason == "no call.video permission"
    assert "+34" in rules.authorize(frozenset({"call.pstn:+34"}), "call.pstn", "+1").reason


def test_throttle_slows_then_locks() -> None:
    policy = rules.ThrottlePolicy(after=3, delay=1.0, lock_after=5, lock_seconds=300, window=900)
    state = None
    now = 1000.0
    for _ in range(2):
        state = rules.record_failure(state, policy, now)
        assert rules.throttle_wait(state, policy, now) == 0
    state = rules.record_failure(state, policy, now)
    assert rules.throttle_wait(state, policy, now) == 1.0
    assert rules.throttle_wait(state, policy, now + 1.0) == 0
    state = rules.record_failure(state, policy, now + 1)
    assert rules.throttle_wait(state, policy, now + 1) == 2.0  # doubles
    state = rules.record_failure(state, policy, now + 3)
    assert rules.throttle_wait(state, policy, now + 3) == 300
    assert rules.throttle_wait(state, policy, now + 304) == 0  # the lock is over


def test_failures_outside_the_window_are_forgotten() -> None:
    policy = rules.ThrottlePolicy(after=1, window=60)
    state = rules.record_failure(None, policy, 0.0)
    assert rules.throttle_wait(state, policy, 0.5) > 0
    assert rules.throttle_wait(state, policy, 61.0) == 0
    assert rules.record_failure(state, policy, 61.0).failures == 1


def test_validation_messages_name_the_field() -> None:
    with pytest.raises(errors.ApiError) as err:
        rules.check_username("subscriber.username", "Alice!")
    assert err.value.field == "subscriber.username"
    with pytest.raises(errors.ApiError):
        rules.check_email("subscriber.email", "a@b")
    rules.check_email("subscriber.email", "")  # optional
    with pytest.raises(errors.ApiError) as err:
        rules.check_password("subscriber.password", "x" * 300)
    assert "at most 256" in err.value.message
