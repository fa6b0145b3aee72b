"""Identity rules as pure functions: validation, permissions, throttling.

Nothing here does I/O or reads the clock; callers pass ``now``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.checks import require
from core.failures import Invalid

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability
# is the mail system's business; this catches typos and junk.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
MAX_DISPLAY_NAME = 128
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_DEVICE_NAME = 128


def check_username(field: str, username: str) -> None:
    require(field, username)
    if not USERNAME.match(username):
        raise Invalid(
            field,
            f"{username[:80]!r} is not a valid username: use 1 to 64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
        )


def check_email(field: str, email: str) -> None:
    if email and (len(email) > 254 or not EMAIL.match(email)):
        raise Invalid(field, f"{email[:80]!r} is not a valid e-mail address")


def check_password(field: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(field, f"must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise Invalid(field, f"must be at most {MAX_PASSWORD} characters long")


def check_roles(field: str, roles: Iterable[str], known: Mapping[str, object]) -> None:
    for role in roles:
        if role not in known:
            raise Invalid(field, f"unknown role {role[:64]!r}; configured roles: {', '.join(sorted(known))}")


def permissions_for(roles: Iterable[str], role_map: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """The union of the roles' permissions."""
    granted: set[str] = set()
    for role in roles:
        granted.update(role_map.get(role, ()))
    return frozenset(granted)


# Actions on a phone number, each with its own permission (prefixes allowed).
PSTN_ACTIONS = frozenset({"call.pstn", "message.pstn"})


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


def authorize(permissions: frozenset[str], action: str, target: str) -> Decision:
    """May a subscriber with these permissions perform ``action`` on ``target``?

    ``call.pstn`` alone allows calls to any number; ``call.pstn:+34`` to
    numbers starting with +34; ``message.pstn`` the same for messages.
    ``admin`` allows everything.
    """
    if "admin" in permissions:
        return Decision(True)
    if action in PSTN_ACTIONS:
        prefixes = [p.partition(":")[2] for p in permissions if p.startswith(f"{action}:")]
        if action in permissions:
            return Decision(True)
        if not prefixes:
            return Decision(False, f"no {action} permission")
        number = target.removeprefix("tel:")
        if any(number.startswith(prefix) for prefix in prefixes):
            return Decision(True)
        return Decision(False, f"{action} is limited to numbers starting with {', '.join(sorted(prefixes))}")
    if action in permissions:
        return Decision(True)
    return Decision(False, f"no {action} permission")


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    first_time: float
    last_time: float
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    after: int = 3
    delay: float = 1.0
    lock_after: int = 10
    lock_seconds: float = 300.0
    window: float = 900.0


# The doubling delay stops growing here (2**30 s is already beyond any cap;
# an unbounded exponent would overflow a float).
_MAX_DOUBLINGS = 30


def _doubled(policy: ThrottlePolicy, failures: int) -> float:
    return float(policy.delay * 2 ** min(failures - policy.after, _MAX_DOUBLINGS))


def throttle_wait(state: ThrottleState | None, policy: ThrottlePolicy, now: float) -> float:
    """Seconds before the next login attempt is allowed (0: go ahead).

    Past ``after`` failures each attempt must wait a delay doubling with each
    failure (capped at a minute); past ``lock_after`` the key is locked.
    """
    if state is None:
        return 0.0
    # A lock lasts its lock_seconds even past the counting window (a lock
    # longer than the window would otherwise end early).
    if state.locked_until > now:
        return state.locked_until - now
    if now - state.first_time > policy.window or state.failures < policy.after:
        return 0.0
    delay = min(_doubled(policy, state.failures), 60.0)
    return max(0.0, state.last_time + delay - now)


def record_failure(
    state: ThrottleState | None, policy: ThrottlePolicy, now: float, *, lock: bool = True
) -> ThrottleState:
    """The state after one more failure; ``lock=False`` for keys that only
    slow (a username-wide count must never lock its owner out)."""
    if state is None or now - state.first_time > policy.window:
        return ThrottleState(failures=1, first_time=now, last_time=now)
    failures = state.failures + 1
    locks = lock and failures >= policy.lock_after
    locked_until = now + policy.lock_seconds if locks else state.locked_until
    return ThrottleState(failures, state.first_time, now, locked_until)


def reserve(state: ThrottleState | None, policy: ThrottlePolicy, now: float) -> ThrottleState | None:
    """The state with this attempt counted as a failure before its password
    is checked, or ``state`` unchanged when the key must wait.

    Counting first is what makes the throttle hold under concurrency: the
    store writes this only if the state is still the one it read, so each
    concurrent attempt sees the ones before it (the success undoes it).
    """
    if throttle_wait(state, policy, now) > 0:
        return state
    return record_failure(state, policy, now)


def forgive(state: ThrottleState | None, policy: ThrottlePolicy) -> ThrottleState | None:
    """Undo one reserved failure (the attempt succeeded or was never
    evaluated); a lock that this attempt's count set is lifted with it."""
    if state is None or state.failures <= 0:
        return state
    failures = state.failures - 1
    locked_until = state.locked_until if failures >= policy.lock_after else 0.0
    return ThrottleState(failures, state.first_time, state.last_time, locked_until)


def username_delay(state: ThrottleState | None, policy: ThrottlePolicy, now: float, cap: float) -> float:
    """Seconds a login for a username waits because of failures for it from
    any address (``state`` as before this attempt). Never a refusal: at most
    ``cap`` seconds, so an attacker elsewhere cannot lock the owner out."""
    if cap <= 0 or state is None or now - state.first_time > policy.window or state.failures < policy.after:
        return 0.0
    return min(_doubled(policy, state.failures), cap)


def refresh_wait(last_rotation: float | None, min_interval: float, now: float) -> float:
    """Seconds before a session may rotate its refresh token again (0: now)."""
    if last_rotation is None or min_interval <= 0:
        return 0.0
    return max(0.0, last_rotation + min_interval - now)
