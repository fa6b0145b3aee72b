"""Identity rules without a server: permissions, PSTN prefixes, throttling."""

from __future__ import annotations

import pytest

from core import failures
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
    with pytest.raises(failures.Invalid) as err:
        rules.check_username("subscriber.username", "Alice!")
    assert err.value.field == "subscriber.username"
    with pytest.raises(failures.Invalid):
        rules.check_email("subscriber.email", "a@b")
    rules.check_email("subscriber.email", "")  # optional
    with pytest.raises(failures.Invalid) as err:
        rules.check_password("subscriber.password", "x" * 300)
    assert "at most 256" in err.value.message


def test_a_reserved_attempt_counts_before_its_check_and_a_waiting_key_reserves_nothing() -> None:
    policy = rules.ThrottlePolicy(after=2, delay=10.0, lock_after=3, lock_seconds=300, window=900)
    state = None
    for expected in (1, 2):
        state = rules.reserve(state, policy, 100.0)
        assert state is not None and state.failures == expected
    # The third attempt at the same moment must wait: the state is unchanged.
    assert rules.reserve(state, policy, 100.0) is state
    later = rules.reserve(state, policy, 110.0)
    assert later is not None and later.failures == 3 and later.locked_until == 410.0


def test_forgiving_a_reserved_attempt_lifts_the_lock_it_set() -> None:
    policy = rules.ThrottlePolicy(after=5, lock_after=3, lock_seconds=300)
    state = rules.reserve(rules.reserve(rules.reserve(None, policy, 0.0), policy, 0.0), policy, 0.0)
    assert state is not None and state.locked_until == 300.0
    forgiven = rules.forgive(state, policy)
    assert forgiven is not None and (forgiven.failures, forgiven.locked_until) == (2, 0.0)
    assert rules.forgive(None, policy) is None


def test_a_username_wide_count_never_locks_and_its_delay_is_capped() -> None:
    policy = rules.ThrottlePolicy(after=3, delay=1.0, lock_after=5, lock_seconds=300, window=900)
    state = None
    for _ in range(2000):  # far past lock_after, and past a float's exponent
        state = rules.record_failure(state, policy, 10.0, lock=False)
    assert state is not None and state.locked_until == 0.0
    assert rules.throttle_wait(state, policy, 10.0) == 60.0  # as a pair key it would wait
    assert rules.username_delay(state, policy, 10.0, cap=5.0) == 5.0
    assert rules.username_delay(state, policy, 10.0, cap=0.0) == 0.0
    assert rules.username_delay(state, policy, 1000.0, cap=5.0) == 0.0  # the window is over
    few = rules.record_failure(rules.record_failure(None, policy, 0.0), policy, 0.0)
    assert rules.username_delay(few, policy, 0.0, cap=5.0) == 0.0


def test_refresh_wait() -> None:
    assert rules.refresh_wait(None, 1.0, 5.0) == 0.0
    assert rules.refresh_wait(5.0, 1.0, 5.25) == 0.75
    assert rules.refresh_wait(5.0, 1.0, 6.0) == 0.0
    assert rules.refresh_wait(5.0, 0.0, 5.0) == 0.0


def test_a_lock_lasts_its_lock_seconds_even_past_the_window() -> None:
    policy = rules.ThrottlePolicy(after=3, delay=1.0, lock_after=10, lock_seconds=600.0, window=300.0)
    state = None
    for second in range(10):
        state = rules.record_failure(state, policy, float(second))
    assert state is not None and state.locked_until == 609.0
    # The window (300 s from the first failure) has passed; the lock has not.
    assert rules.throttle_wait(state, policy, 400.0) == pytest.approx(209.0)
    assert rules.throttle_wait(state, policy, 610.0) == 0.0
