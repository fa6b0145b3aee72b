"""The password check of a login, through its admission bounds and the
login throttle: who may try now, how long a username's attempts are
slowed, and what a refused or abandoned attempt leaves counted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable

from core.clock import Clock
from core.failures import Exhausted, Unauthenticated, Unavailable
from core.identity import rules
from core.identity.limits import Busy, KeyedLocks, PasswordChecks
from core.identity.passwords import verify_password
from core.identity.store import IdentityStore, SubscriberRow, ThrottleContention

log = logging.getLogger("wac.identity")

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
    ) -> None:
        self._store = store
        self._clock = clock
        self._throttle = throttle
        self._username_max_delay = username_max_delay
        self.checks = checks
        # Throttle changes of one key wait for each other in this core, so
        # the compare-and-set only ever retries against other cores.
        self._locks = KeyedLocks()

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
        reserved: list[str] = []
        try:
            for key, what in ((pair, "this username from this client address"), (addr, "this client address")):
                before, _ = await self._change(key, lambda s: rules.reserve(s, self._throttle, now))
                wait = rules.throttle_wait(before, self._throttle, now)
                if wait > 0:
                    locked = before is not None and before.locked_until > now
                    self._failed(username, address, "locked" if locked else "throttled")
                    raise Exhausted(
                        f"too many failed logins for {what}; try again in {math.ceil(wait)} s", retry_after=wait
                    )
                reserved.append(key)
            before, _ = await self._change(user, lambda s: rules.record_failure(s, self._throttle, now, lock=False))
            reserved.append(user)
            delay = rules.username_delay(before, self._throttle, now, self._username_max_delay)
            if delay > 0:
                await self._clock.sleep(delay)
            async with self.checks.slot():
                row = await self._store.get_subscriber(username)
                ok = await verify_password(row.password_hash if row else None, password)
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
        await self._store.clear_throttle(pair)
        await self._forgive([addr, user])
        return row, now

    async def _change(
        self, key: str, change: Callable[[rules.ThrottleState | None], rules.ThrottleState | None]
    ) -> tuple[rules.ThrottleState | None, rules.ThrottleState | None]:
        try:
            async with self._locks.hold(key):
                return await self._store.change_throttle_state(key, change)
        except ThrottleContention:
            raise Unavailable("too many concurrent logins for this account; try again") from None

    async def _forgive(self, keys: list[str]) -> None:
        for key in keys:
            await self._change(key, lambda s: rules.forgive(s, self._throttle))

    def _failed(self, username: str, address: str, reason: str) -> None:
        # Never the password; the JSON formatter escapes whatever the
        # username holds.
        log.warning("login failed", extra={"username": username[:64], "client_address": address, "reason": reason})

    async def purge(self) -> None:
        """Drop throttle rows whose window is over (the rules ignore them
        already), for ever: a flood from many addresses leaves a row per
        address and per pair, which would otherwise stay."""
        while True:
            await self._clock.sleep(THROTTLE_PURGE_INTERVAL)
            try:
                now = self._clock.time()
                await self._store.purge_throttle(before=now - self._throttle.window, now=now)
            except Exception:
                log.exception("purging expired login throttle rows failed; retrying")
