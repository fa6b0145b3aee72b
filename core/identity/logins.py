"""The password check of a login, through its admission bounds and the
login throttle: who may try now, how long a username's attempts are
slowed, and what a refused or abandoned attempt leaves counted."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Coroutine, Sequence
from typing import Any

from core import metrics
from core.clock import Clock
from core.failures import Exhausted, Unauthenticated, Unavailable
from core.identity import rules
from core.identity.limits import Busy, PasswordChecks
from core.identity.passwords import Passwords
from core.identity.store import IdentityStore, SubscriberRow, ThrottleChange, ThrottleContention

log = logging.getLogger("wac.identity")

# A throttle key's state before and after a change.
Changed = tuple[rules.ThrottleState | None, rules.ThrottleState | None]

# Seconds between two purges of expired login-throttle rows.
THROTTLE_PURGE_INTERVAL = 60.0


class Logins:
    def __init__(
        self,
        store: IdentityStore,
        clock: Clock,
        *,
        throttle: rules.ThrottlePolicy,
        checks: PasswordChecks,
        username_max_delay: float,
        passwords: Passwords,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._clock = clock
        self._throttle = throttle
        self._username_max_delay = username_max_delay
        self.checks = checks
        # Take-backs of reservations whose login was cancelled (held until
        # done: the loop keeps only a weak reference to a task).
        self._taking_back: set[asyncio.Task[None]] = set()

    async def check(self, username: str, password: str, address: str) -> tuple[SubscriberRow, float]:
        """The subscriber whose password this is, and the time of the check.

        Exhausted when the admission bounds or the throttle refuse it,
        Unauthenticated for a wrong username or password.
        """
        # Empty only for in-process calls; such logins share one address key.
        # A forwarded address longer than any IP (a hop's bug) is hashed, so
        # that every throttle key fits its column (160) on PostgreSQL too.
        address = address or "unknown"
        if len(address) > 64:
            address = "sha256:" + hashlib.sha256(address.encode()).hexdigest()[:40]
        try:
            async with self.checks.admit(username, address):
                return await self._check_password(username, address, password)
        except Busy as busy:
            self._failed(username, address, "busy")
            raise Exhausted(
                f"{busy.what}; try again in {math.ceil(busy.retry_after)} s", retry_after=busy.retry_after
            ) from None

    async def _check_password(self, username: str, address: str, password: str) -> tuple[SubscriberRow, float]:
        """Each attempt is counted as a failure before its check, atomically
        (see rules.reserve), on three keys: the (username, address) pair and
        the address, which refuse past their limits, and the username, which
        only slows. A success takes its count back.
        """
        now = self._clock.time()
        pair, addr, user = f"pair:{address}|{username}", f"addr:{address}", f"user:{username}"
        refusing = {pair: "this username from this client address", addr: "this client address"}
        reserved: list[str] = []
        try:
            reservation: list[tuple[str, ThrottleChange]] = [
                (pair, lambda s: rules.reserve(s, self._throttle, now)),
                (addr, lambda s: rules.reserve(s, self._throttle, now)),
                (user, lambda s: rules.record_failure(s, self._throttle, now, lock=False)),
            ]
            applied = await self._reserve(reservation)
            reserved = [key for (key, _), (before, after) in zip(reservation, applied, strict=False) if before != after]
            for (key, _), (before, after) in zip(reservation, applied, strict=False):
                wait = rules.throttle_wait(before, self._throttle, now) if before == after else 0.0
                if key in refusing and wait > 0:
                    locked = before is not None and before.locked_until > now
                    self._failed(username, address, "locked" if locked else "throttled")
                    raise Exhausted(
                        f"too many failed logins for {refusing[key]}; try again in {math.ceil(wait)} s",
                        retry_after=wait,
                    )
            before = applied[-1][0]
            delay = rules.username_delay(before, self._throttle, now, self._username_max_delay)
            if delay > 0:
                await self._clock.sleep(delay)
            async with self.checks.slot():
                row = await self._store.get_subscriber(username)
                ok = await self._passwords.verify(row.password_hash if row else None, password)
        except BaseException:
            # Refused, busy or cancelled before an answer: the attempt was
            # never judged, so it is not a failure.
            await asyncio.shield(self._forgive(reserved))
            raise
        if not ok or row is None:
            self._failed(username, address, "unknown username" if row is None else "wrong password")
            raise Unauthenticated("wrong username or password", reason="BAD_CREDENTIALS")
        # The right password: the pair starts afresh; the address and the
        # username keep the failures of others, less this attempt.
        forgive = self._forgiving
        await self._apply([(pair, None), (addr, forgive), (user, forgive)])
        return row, now

    async def _reserve(self, changes: list[tuple[str, ThrottleChange]]) -> list[Changed]:
        """The reservation's unit of work, which a cancelled login does not
        leave counted: the unit goes on in the database's writer when its
        caller is cancelled (a client that gave up), and may commit; what it
        counted then is taken back once it has."""
        unit = asyncio.ensure_future(self._apply(changes, stop_unchanged=True))
        try:
            return await asyncio.shield(unit)
        except asyncio.CancelledError:
            taking_back = self._keep(self._take_back([key for key, _ in changes], unit))
            # This login keeps its place (its address's slot) until then:
            # the next login from the address would see the count, and with
            # two logins under way per address, one count more refuses it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(taking_back)
            raise

    def _keep(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # Held until done: the loop keeps only a weak reference to a task.
        task = asyncio.ensure_future(work)
        self._taking_back.add(task)
        task.add_done_callback(self._taking_back.discard)
        return task

    async def _take_back(self, keys: list[str], unit: asyncio.Future[list[Changed]]) -> None:
        try:
            applied = await unit
        except Exception:
            return  # not written: nothing counted
        await self._forgive([key for key, (before, after) in zip(keys, applied, strict=False) if before != after])

    def _forgiving(self, state: rules.ThrottleState | None) -> rules.ThrottleState | None:
        return rules.forgive(state, self._throttle)

    async def _apply(
        self, changes: Sequence[tuple[str, ThrottleChange | None]], *, stop_unchanged: bool = False
    ) -> list[Changed]:
        try:
            return await self._store.change_throttle_states(changes, stop_unchanged=stop_unchanged)
        except ThrottleContention:
            raise Unavailable("too many concurrent logins for this account; try again") from None

    async def _forgive(self, keys: list[str]) -> None:
        if keys:
            await self._apply([(key, self._forgiving) for key in keys])

    def _failed(self, username: str, address: str, reason: str) -> None:
        # Never the password; the JSON formatter escapes whatever the
        # username holds.
        log.warning("login failed", extra={"username": username[:64], "client_address": address, "reason": reason})

    async def purge(self) -> None:
        """Drop throttle rows whose window is over (the rules ignore them
        already), for ever: a flood from many addresses leaves a row per
        address and per pair, which would otherwise stay."""
        await self._count()
        while True:
            await self._clock.sleep(THROTTLE_PURGE_INTERVAL)
            try:
                now = self._clock.time()
                await self._store.purge_throttle(before=now - self._throttle.window, now=now)
            except Exception:
                log.exception("purging expired login throttle rows failed; retrying")
            await self._count()

    async def _count(self) -> None:
        """The throttled and locked keys' gauges, as often as the purge runs."""
        now = self._clock.time()
        try:
            slowed, locked = await self._store.throttle_counts(
                after=self._throttle.after, since=now - self._throttle.window, now=now
            )
        except Exception as exc:  # an outage: the gauges keep their last values
            log.debug("counting the login throttle's keys failed: %s", exc)
            return
        metrics.LOGIN_THROTTLE_KEYS.labels("throttled").set(slowed)
        metrics.LOGIN_THROTTLE_KEYS.labels("locked").set(locked)
