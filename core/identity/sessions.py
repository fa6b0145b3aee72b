"""Sessions once opened: their tokens issued, their refresh tokens
rotated, and their revocation told to everything that holds them (the
event streams, the device registry, the sessions-revoked listeners).

A refresh token is rotated once: the same token again within
``refresh_reuse_grace`` (a race, or a retry after a lost answer) gets the
same answer; after it, the session is revoked as stolen.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass

from core import metrics
from core.checks import require
from core.clock import Clock
from core.cluster.devices import DeviceRegistry
from core.events.log import EventLog
from core.failures import Aborted, Exhausted, Unauthenticated
from core.identity import rules
from core.identity.keys import SigningKeys
from core.identity.limits import KeyedLocks
from core.identity.messages import session_revoked_event
from core.identity.results import IssuedSession
from core.identity.revocations import (
    EVERY_SESSION_REASONS,
    RevocationCache,
    SessionsRevoked,
    SessionsRevokedListener,
)
from core.identity.store import IdentityStore, SessionRow, SubscriberRow
from settings.config import IdentityConfig

log = logging.getLogger("wac.identity")


def _hash_refresh(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _RefreshAnswer:
    """The answer to a refresh with one token, kept for the reuse grace."""

    asked_generation: int
    asked_hash: str
    generation: int  # the session's generation after this answer
    session: IssuedSession
    answered_at: float
    until: float  # the end of refresh_reuse_grace

    def answers(self, generation: int, presented: str, now: float, arrived: float) -> bool:
        """Is this the answer to a refresh asked ``now`` that ``arrived``
        then? A refresh that arrived before this answer was given raced it,
        whatever the grace (even 0): a race is not a reuse."""
        same = generation == self.asked_generation and presented == self.asked_hash
        return same and (now <= self.until or arrived <= self.answered_at)


class Sessions:
    def __init__(
        self,
        config: IdentityConfig,
        store: IdentityStore,
        events: EventLog,
        devices: DeviceRegistry,
        keys: SigningKeys,
        revocations: RevocationCache,
        clock: Clock,
    ) -> None:
        self._config = config
        self._ttl = config.access_token_ttl
        self._store = store
        self._events = events
        self._devices = devices
        self._keys = keys
        self._revocations = revocations
        self._clock = clock
        self._refresh_locks = KeyedLocks()
        # session id -> the last rotation's answer, handed again to a racing
        # or retried refresh with the same token within refresh_reuse_grace.
        self._refresh_answers: dict[str, _RefreshAnswer] = {}
        self._revoked_listeners: list[SessionsRevokedListener] = []

    def on_revoked(self, listener: SessionsRevokedListener) -> None:
        self._revoked_listeners.append(listener)

    async def open(self, row: SubscriberRow, device_name: str, now: float) -> IssuedSession:
        """A new session of ``row``'s subscriber on ``device_name``."""
        # Created now, not when the login arrived (``now``): other cores
        # poll for sessions by create_time, and a login that queued for its
        # password check must not look older than it is when it commits.
        now = max(now, self._clock.time())
        session_id = secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32)
        refresh_expire = now + self._config.refresh_token_ttl
        await self._store.create_session(
            SessionRow(
                session_id=session_id,
                username=row.username,
                device_name=device_name,
                create_time=now,
                refresh_generation=0,
                refresh_hash=_hash_refresh(secret),
                refresh_expire_time=refresh_expire,
                revoke_time=None,
                revoke_reason=None,
            )
        )
        await self._events.open(session_id, row.username)
        log.info("login", extra={"username": row.username, "session": session_id})
        return self._issue(row, session_id, device_name, 0, secret, refresh_expire, now)

    def _issue(
        self,
        row: SubscriberRow,
        session_id: str,
        device_name: str,
        generation: int,
        secret: str,
        refresh_expire: float,
        now: float,
    ) -> IssuedSession:
        token, expires = self._keys.sign(row.username, session_id, now)
        # Verification on this core knows the session at once (others poll).
        self._revocations.issued(session_id, refresh_expire + self._ttl + 60)
        return IssuedSession(
            session_id=session_id,
            access_token=token,
            expire_time=expires,
            refresh_token=f"{session_id}.{generation}.{secret}",
            refresh_expire_time=refresh_expire,
            subscriber=row,
            device_name=device_name,
        )

    async def refresh(self, refresh_token: str) -> IssuedSession:
        """The session with a new access token and its refresh token rotated."""
        require("refresh_token", refresh_token)
        session_id, _, rest = refresh_token.partition(".")
        generation_text, _, secret = rest.partition(".")
        if not session_id or not generation_text.isdigit() or not secret or len(refresh_token) > 512:
            raise Unauthenticated("malformed refresh token", reason="MALFORMED")
        generation = int(generation_text)
        # One refresh per session at a time in this core: a racing refresh
        # with the same token waits and is handed the winner's answer (the
        # conditional update in rotate_refresh settles races between cores).
        arrived = self._clock.time()
        async with self._refresh_locks.hold(session_id):
            return await self._refresh(session_id, generation, _hash_refresh(secret), arrived)

    async def _refresh(self, session_id: str, generation: int, presented: str, arrived: float) -> IssuedSession:
        session = await self._store.get_session(session_id)
        now = self._clock.time()
        if session is None:
            raise Unauthenticated("unknown refresh token", reason="UNKNOWN_SESSION")
        if session.revoke_time is not None:
            raise Unauthenticated(f"the session was ended ({session.revoke_reason})", reason="REVOKED")
        answered = self._refresh_answers.get(session_id)
        if (
            answered is not None
            and answered.answers(generation, presented, now, arrived)
            and session.refresh_generation == answered.generation
        ):
            # The same question asked while the first was being answered (a
            # race), or again within the grace (a retry after a lost answer):
            # the same answer, so that whichever copy the client keeps is
            # the current one.
            return answered.session
        grace = self._config.refresh_reuse_grace
        retried = (
            generation == session.refresh_generation - 1
            and presented == session.previous_refresh_hash
            and session.rotate_time is not None
            and now - session.rotate_time <= grace
        )
        if generation < session.refresh_generation and not retried:
            # A used refresh token came back: someone holds a copy. End the
            # session so that neither copy can go on.
            await self.revoke(session.username, [session.session_id], "refresh_token_reused")
            raise Unauthenticated(
                "this refresh token was already used; the session is revoked", reason="REFRESH_TOKEN_REUSED"
            )
        if not retried and (generation != session.refresh_generation or presented != session.refresh_hash):
            raise Unauthenticated("unknown refresh token", reason="UNKNOWN_SESSION")
        # A retry within the grace whose answer this core does not hold (it
        # was given by another core, or before a restart) rotates from the
        # current generation, so the answer that was lost becomes useless.
        asked_generation, generation = generation, session.refresh_generation
        if session.refresh_expire_time <= now:
            raise Unauthenticated("the refresh token has expired; log in again", reason="EXPIRED")
        wait = rules.refresh_wait(session.rotate_time, self._config.refresh_min_interval, now)
        if wait > 0:
            raise Exhausted(
                f"this session was refreshed moments ago; try again in {math.ceil(wait)} s", retry_after=wait
            )
        row = await self._store.get_subscriber(session.username)
        if row is None or row.disabled:
            raise Unauthenticated("the subscriber is disabled", reason="DISABLED")
        new_secret = secrets.token_urlsafe(32)
        refresh_expire = now + self._config.refresh_token_ttl
        if not await self._store.rotate_refresh(session_id, generation, _hash_refresh(new_secret), refresh_expire, now):
            # Another core rotated it between our read and our write: nothing
            # is revoked, and the same token is accepted once more within
            # the grace.
            raise Aborted(
                "this session was refreshed at the same moment elsewhere; retry with the same refresh token",
                reason="REFRESH_RACE",
            )
        await self._events.open(session_id, row.username)
        answer = self._issue(row, session_id, session.device_name, generation + 1, new_secret, refresh_expire, now)
        remembered = _RefreshAnswer(
            asked_generation, presented, generation + 1, answer, self._clock.time(), now + grace
        )
        self._remember_refresh(session_id, remembered, now)
        return answer

    def _remember_refresh(self, session_id: str, answer: _RefreshAnswer, now: float) -> None:
        if len(self._refresh_answers) >= 10_000:
            # Answers live for the grace only: drop the stale, and everything
            # if a flood of live ones remains (a retry then rotates again).
            self._refresh_answers = {k: v for k, v in self._refresh_answers.items() if v.until >= now}
            if len(self._refresh_answers) >= 10_000:
                self._refresh_answers.clear()
        self._refresh_answers[session_id] = answer

    async def revoke(self, username: str, session_ids: list[str], reason: str) -> list[str]:
        """Revoke sessions and tell their devices. Returns the ids revoked."""
        now = self._clock.time()
        revoked: list[str] = []
        for session_id in session_ids:
            revoked += await self._store.revoke_sessions(reason=reason, now=now, session_id=session_id)
        await self._after_revoke(username, revoked, reason, now)
        return revoked

    async def revoke_all(self, username: str, reason: str) -> int:
        """Revoke every session of a subscriber; how many were open."""
        now = self._clock.time()
        revoked = await self._store.revoke_sessions(reason=reason, now=now, username=username)
        await self._after_revoke(username, revoked, reason, now)
        return len(revoked)

    async def revoked_elsewhere(self, username: str, session_id: str, reason: str) -> None:
        """Tell what holds a session that another core or the admin CLI revoked."""
        await self._tell_revoked(username, session_id, reason)
        await self._announce_revoked(SessionsRevoked(username, (session_id,), reason, elsewhere=True))

    async def _tell_revoked(self, username: str, session_id: str, reason: str) -> None:
        await self._events.close(session_id, session_revoked_event(session_id, reason))
        await self._devices.ended(username, session_id)

    async def _after_revoke(self, username: str, revoked: list[str], reason: str, now: float) -> None:
        if revoked:
            metrics.SESSION_REVOCATIONS_BY(reason).inc(len(revoked))
        for session_id in revoked:
            self._revocations.add(session_id, reason, now)
            await self._tell_revoked(username, session_id, reason)
        if revoked or reason in EVERY_SESSION_REASONS:
            await self._announce_revoked(SessionsRevoked(username, tuple(revoked), reason))

    async def _announce_revoked(self, event: SessionsRevoked) -> None:
        for listener in self._revoked_listeners:
            try:
                await listener(event)
            except Exception:
                log.exception(
                    "a sessions-revoked listener failed", extra={"username": event.username, "reason": event.reason}
                )
