"""IdentityService: translates the protobuf API to identity operations.

Rules are in ``rules.py``, SQL in ``store.py``, token crypto in
``tokens.py``; this module sequences them and speaks gRPC.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from google.protobuf import empty_pb2

from core import errors
from core.auth.principal import (
    SCOPES,
    Principal,
    ServicePrincipal,
    SubscriberPrincipal,
    client_address,
    current,
)
from core.convert import timestamp
from core.events.devices import DeviceRegistry
from core.events.log import EventLog
from core.identity import apikeys, rules, sealing, service_keys
from core.identity.limits import Busy, KeyedLocks, PasswordChecks
from core.identity.passwords import hash_password, verify_password
from core.identity.revocations import (
    EVERY_SESSION_REASONS,
    RevocationCache,
    SessionsRevoked,
    SessionsRevokedListener,
)
from core.identity.store import (
    ApiKeyRow,
    Duplicate,
    IdentityStore,
    NumberTaken,
    SessionRow,
    SubscriberRow,
    ThrottleContention,
)
from core.identity.tokens import KeyRing, TokenInvalid, new_private_key
from core.paging import decode_token, encode_token, page_size
from core.phones import InvalidPhoneNumber, normalize_e164
from settings.config import Config, ConfigError
from wac.v1 import events_pb2, identity_pb2, identity_pb2_grpc

log = logging.getLogger("wac.identity")

# Seconds between two purges of expired login-throttle rows.
THROTTLE_PURGE_INTERVAL = 60.0

Reason = identity_pb2.VerifyTokenResponse.Reason
SubscriberListener = Callable[[str, SubscriberRow | None], Awaitable[None]]

UPDATABLE = ("display_name", "phone_numbers", "email", "roles", "disabled", "password")


def _hash_refresh(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Known:
    """A subscriber as verification needs it, converted once."""

    row: SubscriberRow
    message: identity_pb2.Subscriber
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class _KnownKey:
    """An API key as authentication needs it, read at most once a minute
    (revocations and rotations reach it sooner, through the poll)."""

    principal: ServicePrincipal
    key_id: str
    end: float | None
    read_until: float


# How long an API key's row is trusted before it is read again. Its end is
# polled separately (RevocationCache), so this bounds nothing but reads.
API_KEY_CACHE = 60.0
# Last uses of API keys are written in the background, this often at most.
API_KEY_USE_FLUSH = 60.0
# A rotated key's default grace: a day to roll the new key out.
DEFAULT_ROTATION_GRACE = 24 * 3600.0
# iat may lie this far ahead of our clock (another core's clock may run ahead).
IAT_LEEWAY = 30.0


@dataclass(frozen=True, slots=True)
class SipGatewayAnnouncement:
    """Where the operator's SIP gateway is, told to every client in its
    Session (Login and RefreshSession) so that it can register there."""

    path: str  # the WebSocket path on the front door the client reached
    domain: str  # the SIP domain
    url: str = ""  # the full URL when the operator sets one, else empty

    def pb(self) -> identity_pb2.SipGateway:
        return identity_pb2.SipGateway(path=self.path, domain=self.domain, url=self.url)


@dataclass(frozen=True, slots=True)
class _RefreshAnswer:
    """The answer to a refresh with one token, kept for the reuse grace."""

    asked_generation: int
    asked_hash: str
    generation: int  # the session's generation after this answer
    session: identity_pb2.Session
    answered_at: float
    until: float  # the end of refresh_reuse_grace

    def answers(self, generation: int, presented: str, now: float, arrived: float) -> bool:
        """Is this the answer to a refresh asked ``now`` that ``arrived``
        then? A refresh that arrived before this answer was given raced it,
        whatever the grace (even 0): a race is not a reuse."""
        same = generation == self.asked_generation and presented == self.asked_hash
        return same and (now <= self.until or arrived <= self.answered_at)


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        config: Config,
        store: IdentityStore,
        events: EventLog,
        devices: DeviceRegistry,
        clock: Callable[[], float] = time.time,
        *,
        sip_gateway: SipGatewayAnnouncement | None = None,
    ) -> None:
        self._config = config
        self._sip_gateway = sip_gateway
        self._ttl = config.identity.access_token_ttl
        self._store = store
        self._events = events
        self._devices = devices
        self._clock = clock
        self._keys = KeyRing(config.identity.issuer, max_lifetime=self._ttl)
        # Raises ConfigError for a malformed secret, before anything starts.
        self._seal = sealing.cipher_for(config.identity.key_seal_secret)
        self._revocations = RevocationCache(
            store,
            interval=config.identity.revocation_poll,
            keep_for=config.identity.access_token_ttl + 60,
            clock=clock,
        )
        self._throttle = rules.ThrottlePolicy(
            after=config.identity.throttle_after,
            delay=config.identity.throttle_delay,
            lock_after=config.identity.lock_after,
            lock_seconds=config.identity.lock_seconds,
            window=config.identity.throttle_window,
        )
        # Public so that tests (and a future metric) can see how many
        # password checks run at once.
        self.password_checks = PasswordChecks(
            total=config.identity.max_password_checks,
            per_address=config.identity.max_logins_per_address,
            queue=config.identity.password_check_queue,
            queue_per_address=config.identity.login_queue_per_address,
        )
        self._refresh_locks = KeyedLocks()
        # Throttle changes of one key wait for each other in this core, so
        # the compare-and-set only ever retries against other cores.
        self._throttle_locks = KeyedLocks()
        # session id -> the last rotation's answer, handed again to a racing
        # or retried refresh with the same token within refresh_reuse_grace.
        self._refresh_answers: dict[str, _RefreshAnswer] = {}
        self._subscriber_listeners: list[SubscriberListener] = []
        self._revoked_listeners: list[SessionsRevokedListener] = []
        self._api_keys: dict[str, _KnownKey] = {}
        self._api_key_used: dict[str, float] = {}
        self._subscriber_cache: dict[str, tuple[_Known | None, float]] = {}
        self._key_reload_after = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        await self._ensure_signing_key()
        await self._revocations.load()
        self._revocations.on_revoked_elsewhere(self._revoked_elsewhere)
        self._tasks.append(asyncio.create_task(self._revocations.run(), name="revocation-poll"))
        self._tasks.append(asyncio.create_task(self._record_api_key_uses(), name="api-key-uses"))
        self._tasks.append(asyncio.create_task(self._purge_throttle(), name="throttle-purge"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._flush_api_key_uses()
        except Exception:
            # A last use lost costs nothing; a stop that fails does.
            log.warning("API keys' last use not recorded at stop", exc_info=True)

    def on_subscriber_changed(self, listener: SubscriberListener) -> None:
        self._subscriber_listeners.append(listener)

    def on_sessions_revoked(self, listener: SessionsRevokedListener) -> None:
        """Call ``listener(SessionsRevoked)`` once sessions stop verifying:
        revoked here (RevokeSessions, disabling, deleting, a new password,
        logout, a reused refresh token) at once, or elsewhere (another core,
        the admin CLI) when the poll learns of it. A whole-subscriber
        revocation is told even when it found no open session. A failing
        listener is logged and skipped; the revocation stands. Listeners run
        in turn before the revoking call answers: keep them short (start a
        task for anything slow)."""
        self._revoked_listeners.append(listener)

    @property
    def role_map(self) -> Mapping[str, tuple[str, ...]]:
        return self._config.roles

    async def _ensure_signing_key(self) -> None:
        rows = await self._opened_signing_keys(seal_clear=True)
        now = self._clock()
        rotate_after = self._config.identity.key_rotation_days * 86400
        if not rows or now - max(r[2] for r in rows) > rotate_after:
            kid, jwk = new_private_key()
            await self._store.add_signing_key(kid, sealing.seal(self._seal, kid, jwk) if self._seal else jwk, now)
            log.info("generated signing key %s", kid)
            # Keys older than a rotation plus a token lifetime sign nothing
            # that is still valid: drop them.
            stale = [r[0] for r in rows if now - r[2] > rotate_after + self._ttl + 60]
            if stale:
                await self._store.drop_signing_keys(stale)
            rows = await self._opened_signing_keys(seal_clear=False)
        self._keys.load(rows)

    async def _opened_signing_keys(self, *, seal_clear: bool) -> list[tuple[str, str, float]]:
        """The signing keys with their private JWKs opened. ConfigError when
        they are sealed and the secret is missing or wrong. ``seal_clear``:
        seal in place the keys stored in clear, when a secret is configured."""
        opened = []
        for kid, stored, create_time in await self._store.signing_keys():
            jwk = sealing.open_key(self._seal, kid, stored)
            if seal_clear and self._seal is not None and not sealing.is_sealed(stored):
                await self._store.replace_signing_key(kid, sealing.seal(self._seal, kid, jwk))
                log.info("sealed signing key %s", kid)
            opened.append((kid, jwk, create_time))
        return opened

    async def _reload_keys_for(self, token_error: TokenInvalid) -> bool:
        """A token with an unknown kid may come from a key another core just
        made: reload the ring, at most once a second."""
        now = self._clock()
        if token_error.reason != "UNKNOWN_KEY" or now < self._key_reload_after:
            return False
        self._key_reload_after = now + 1.0
        try:
            self._keys.load(await self._opened_signing_keys(seal_clear=False))
        except ConfigError as exc:
            # Another core sealed a key under a secret this one lacks: keep
            # verifying with the keys already loaded.
            log.error("signing keys not reloaded: %s", exc)
            return False
        return True

    # -- authentication (the interceptor calls this) -------------------
    async def authenticate(self, bearer: str) -> Principal:
        if bearer.count(".") == 2:
            verdict = await self._verify(bearer)
            if isinstance(verdict, SubscriberPrincipal):
                return verdict
            raise errors.unauthenticated(_INACTIVE_MESSAGES[verdict], reason=Reason.Name(verdict))
        return await self._api_key(bearer)

    async def _verify(self, token: str) -> SubscriberPrincipal | identity_pb2.VerifyTokenResponse.Reason:
        """The principal of a valid token, or the Reason it is not active."""
        try:
            claims = self._keys.verify(token)
        except TokenInvalid as exc:
            if await self._reload_keys_for(exc):
                return await self._verify(token)
            return Reason.MALFORMED if exc.reason == "MALFORMED" else Reason.INVALID_SIGNATURE
        now = self._clock()
        if claims.expires_at <= now:
            return Reason.EXPIRED
        if claims.issued_at > now + IAT_LEEWAY:
            return Reason.MALFORMED
        revoked = self._revocations.reason(claims.session_id)
        if revoked is not None:
            return Reason.DISABLED if revoked in ("disabled", "deleted") else Reason.REVOKED
        # A session never issued (a token minted with a stolen key) counts as
        # revoked: from memory, or one bounded lookup for a session too new.
        if not await self._revocations.is_issued(claims.session_id):
            return Reason.REVOKED
        known = await self._known_subscriber(claims.username)
        if known is None or known.row.disabled:
            return Reason.DISABLED
        return SubscriberPrincipal(
            username=claims.username,
            session_id=claims.session_id,
            permissions=known.permissions,
            expires_at=claims.expires_at,
        )

    async def _known_subscriber(self, username: str) -> _Known | None:
        # A one-second cache: verification stays a memory lookup under load,
        # and a disabled subscriber is refused within a second everywhere
        # (disabling also revokes the sessions, which is immediate locally).
        now = self._clock()
        hit = self._subscriber_cache.get(username)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = await self._store.get_subscriber(username)
        known = None
        if row is not None:
            known = _Known(row, self._subscriber_pb(row), rules.permissions_for(row.roles, self.role_map))
        if len(self._subscriber_cache) > 100_000:
            self._subscriber_cache.clear()
        self._subscriber_cache[username] = (known, now + 1.0)
        return known

    async def _api_key(self, key: str) -> ServicePrincipal:
        known = await self._known_api_key(key)
        if known is None:
            raise errors.unauthenticated("unknown or revoked API key", reason="UNKNOWN_API_KEY")
        # A dict write; the database hears of it at most once a minute.
        self._api_key_used[known.key_id] = self._clock()
        return known.principal

    async def _known_api_key(self, key: str) -> _KnownKey | None:
        """The key if it authenticates now: from memory, its row read at
        most once a minute; its end (revoked, or rotated and past its grace)
        known on every core within a poll."""
        now = self._clock()
        known = self._api_keys.get(key)
        if known is None or known.read_until <= now:
            known = None
            parts = apikeys.split(key)
            row = await self._store.get_api_key(parts[0]) if parts else None
            if parts is None or row is None or not apikeys.matches(parts[1], row.secret_hash):
                return None
            principal = ServicePrincipal(key_name=row.name, scopes=frozenset(row.scopes))
            known = _KnownKey(principal, row.key_id, row.revoke_time, now + API_KEY_CACHE)
            if len(self._api_keys) > 10_000:
                self._api_keys.clear()
            self._api_keys[key] = known
        ends = [end for end in (known.end, self._revocations.key_end(known.key_id)) if end is not None]
        if ends and min(ends) <= now:
            return None
        return known

    async def _record_api_key_uses(self) -> None:
        while True:
            await asyncio.sleep(API_KEY_USE_FLUSH)
            try:
                await self._flush_api_key_uses()
            except Exception:
                log.exception("recording API keys' last use failed; retrying")

    async def _flush_api_key_uses(self) -> None:
        used, self._api_key_used = self._api_key_used, {}
        await self._store.record_api_key_use(used)

    async def _purge_throttle(self) -> None:
        """Drop throttle rows whose window is over (the rules ignore them
        already): a flood from many addresses leaves a row per address and
        per pair, which would otherwise stay for ever."""
        while True:
            await asyncio.sleep(THROTTLE_PURGE_INTERVAL)
            try:
                now = self._clock()
                await self._store.purge_throttle(before=now - self._throttle.window, now=now)
            except Exception:
                log.exception("purging expired login throttle rows failed; retrying")

    # -- sessions -----------------------------------------------------
    async def Login(
        self, request: identity_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Session:
        errors.require("username", request.username)
        errors.require("password", request.password)
        errors.max_length("username", request.username, 64)
        errors.max_length("password", request.password, rules.MAX_PASSWORD)
        errors.max_length("device_name", request.device_name, rules.MAX_DEVICE_NAME)
        username = request.username
        # Empty only for in-process calls; such logins share one address key.
        # A forwarded address longer than any IP (a hop's bug) is hashed, so
        # that every throttle key fits its column (160) on PostgreSQL too.
        address = client_address() or "unknown"
        if len(address) > 64:
            address = "sha256:" + hashlib.sha256(address.encode()).hexdigest()[:40]
        try:
            async with self.password_checks.admit(username, address):
                row, now = await self._check_password(username, address, request.password)
        except Busy as busy:
            self._login_failed(username, address, "busy")
            raise errors.exhausted(
                f"{busy.what}; try again in {math.ceil(busy.retry_after)} s", busy.retry_after
            ) from None
        if row.disabled:
            raise errors.permission_denied(f"subscriber '{row.username}' is disabled")
        session_id = secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32)
        refresh_expire = now + self._config.identity.refresh_token_ttl
        await self._store.create_session(
            SessionRow(
                session_id=session_id,
                username=row.username,
                device_name=request.device_name,
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
        return self._session(row, session_id, request.device_name, 0, secret, refresh_expire, now)

    async def _check_password(self, username: str, address: str, password: str) -> tuple[SubscriberRow, float]:
        """The subscriber whose password this is, through the throttle.

        Each attempt is counted as a failure before its check, atomically
        (see rules.reserve), on three keys: the (username, address) pair and
        the address, which refuse past their limits, and the username, which
        only slows. A success takes its count back.
        """
        now = self._clock()
        pair, addr, user = f"pair:{address}|{username}", f"addr:{address}", f"user:{username}"
        reserved: list[str] = []
        try:
            for key, what in ((pair, "this username from this client address"), (addr, "this client address")):
                before, _ = await self._throttle_change(key, lambda s: rules.reserve(s, self._throttle, now))
                wait = rules.throttle_wait(before, self._throttle, now)
                if wait > 0:
                    locked = before is not None and before.locked_until > now
                    self._login_failed(username, address, "locked" if locked else "throttled")
                    raise errors.exhausted(
                        f"too many failed logins for {what}; try again in {math.ceil(wait)} s", retry_after=wait
                    )
                reserved.append(key)
            before, _ = await self._throttle_change(
                user, lambda s: rules.record_failure(s, self._throttle, now, lock=False)
            )
            reserved.append(user)
            delay = rules.username_delay(before, self._throttle, now, self._config.identity.username_max_delay)
            if delay > 0:
                await asyncio.sleep(delay)
            async with self.password_checks.slot():
                row = await self._store.get_subscriber(username)
                ok = await verify_password(row.password_hash if row else None, password)
        except BaseException:
            # Refused, busy or cancelled before an answer: the attempt was
            # never judged, so it is not a failure.
            await asyncio.shield(self._forgive(reserved))
            raise
        if not ok or row is None:
            self._login_failed(username, address, "unknown username" if row is None else "wrong password")
            raise errors.unauthenticated("wrong username or password", reason="BAD_CREDENTIALS")
        # The right password: the pair starts afresh; the address and the
        # username keep the failures of others, less this attempt.
        await self._store.clear_throttle(pair)
        await self._forgive([addr, user])
        return row, now

    async def _throttle_change(
        self, key: str, change: Callable[[rules.ThrottleState | None], rules.ThrottleState | None]
    ) -> tuple[rules.ThrottleState | None, rules.ThrottleState | None]:
        try:
            async with self._throttle_locks.hold(key):
                return await self._store.change_throttle_state(key, change)
        except ThrottleContention:
            raise errors.ApiError(
                grpc.StatusCode.UNAVAILABLE, "too many concurrent logins for this account; try again"
            ) from None

    async def _forgive(self, keys: list[str]) -> None:
        for key in keys:
            await self._throttle_change(key, lambda s: rules.forgive(s, self._throttle))

    def _login_failed(self, username: str, address: str, reason: str) -> None:
        # Never the password; the JSON formatter escapes whatever the
        # username holds.
        log.warning("login failed", extra={"username": username[:64], "client_address": address, "reason": reason})

    def _session(
        self,
        row: SubscriberRow,
        session_id: str,
        device_name: str,
        generation: int,
        secret: str,
        refresh_expire: float,
        now: float,
    ) -> identity_pb2.Session:
        token, expires = self._keys.sign(row.username, session_id, now, self._ttl)
        # Verification on this core knows the session at once (others poll).
        self._revocations.issued(session_id, refresh_expire + self._ttl + 60)
        return identity_pb2.Session(
            session_id=session_id,
            access_token=token,
            expire_time=timestamp(expires),
            refresh_token=f"{session_id}.{generation}.{secret}",
            refresh_expire_time=timestamp(refresh_expire),
            subscriber=self._subscriber_pb(row),
            device_name=device_name,
            sip_gateway=self._sip_gateway.pb() if self._sip_gateway else None,
        )

    async def RefreshSession(
        self, request: identity_pb2.RefreshSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Session:
        errors.require("refresh_token", request.refresh_token)
        session_id, _, rest = request.refresh_token.partition(".")
        generation_text, _, secret = rest.partition(".")
        if not session_id or not generation_text.isdigit() or not secret or len(request.refresh_token) > 512:
            raise errors.unauthenticated("malformed refresh token", reason="MALFORMED")
        generation = int(generation_text)
        # One refresh per session at a time in this core: a racing refresh
        # with the same token waits and is handed the winner's answer (the
        # conditional update in rotate_refresh settles races between cores).
        arrived = self._clock()
        async with self._refresh_locks.hold(session_id):
            return await self._refresh(session_id, generation, _hash_refresh(secret), arrived)

    async def _refresh(self, session_id: str, generation: int, presented: str, arrived: float) -> identity_pb2.Session:
        session = await self._store.get_session(session_id)
        now = self._clock()
        if session is None:
            raise errors.unauthenticated("unknown refresh token", reason="UNKNOWN_SESSION")
        if session.revoke_time is not None:
            raise errors.unauthenticated(f"the session was ended ({session.revoke_reason})", reason="REVOKED")
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
            answer = identity_pb2.Session()
            answer.CopyFrom(answered.session)
            return answer
        retried = (
            generation == session.refresh_generation - 1
            and presented == session.previous_refresh_hash
            and session.rotate_time is not None
            and now - session.rotate_time <= self._config.identity.refresh_reuse_grace
        )
        if generation < session.refresh_generation and not retried:
            # A used refresh token came back: someone holds a copy. End the
            # session so that neither copy can go on.
            await self._revoke(session.username, [session.session_id], "refresh_token_reused")
            raise errors.unauthenticated(
                "this refresh token was already used; the session is revoked", reason="REFRESH_TOKEN_REUSED"
            )
        if not retried and (generation != session.refresh_generation or presented != session.refresh_hash):
            raise errors.unauthenticated("unknown refresh token", reason="UNKNOWN_SESSION")
        # A retry within the grace whose answer this core does not hold (it
        # was given by another core, or before a restart) rotates from the
        # current generation, so the answer that was lost becomes useless.
        asked_generation, generation = generation, session.refresh_generation
        if session.refresh_expire_time <= now:
            raise errors.unauthenticated("the refresh token has expired; log in again", reason="EXPIRED")
        wait = rules.refresh_wait(session.rotate_time, self._config.identity.refresh_min_interval, now)
        if wait > 0:
            raise errors.exhausted(
                f"this session was refreshed moments ago; try again in {math.ceil(wait)} s", retry_after=wait
            )
        row = await self._store.get_subscriber(session.username)
        if row is None or row.disabled:
            raise errors.unauthenticated("the subscriber is disabled", reason="DISABLED")
        new_secret = secrets.token_urlsafe(32)
        refresh_expire = now + self._config.identity.refresh_token_ttl
        if not await self._store.rotate_refresh(session_id, generation, _hash_refresh(new_secret), refresh_expire, now):
            # Another core rotated it between our read and our write: nothing
            # is revoked, and the same token is accepted once more within
            # the grace.
            raise errors.ApiError(
                grpc.StatusCode.ABORTED,
                "this session was refreshed at the same moment elsewhere; retry with the same refresh token",
                reason="REFRESH_RACE",
            )
        await self._events.open(session_id, row.username)
        answer = self._session(row, session_id, session.device_name, generation + 1, new_secret, refresh_expire, now)
        self._remember_refresh(
            session_id,
            _RefreshAnswer(
                asked_generation,
                presented,
                generation + 1,
                answer,
                self._clock(),
                now + self._config.identity.refresh_reuse_grace,
            ),
            now,
        )
        return answer

    def _remember_refresh(self, session_id: str, answer: _RefreshAnswer, now: float) -> None:
        if len(self._refresh_answers) >= 10_000:
            # Answers live for the grace only: drop the stale, and everything
            # if a flood of live ones remains (a retry then rotates again).
            self._refresh_answers = {k: v for k, v in self._refresh_answers.items() if v.until >= now}
            if len(self._refresh_answers) >= 10_000:
                self._refresh_answers.clear()
        self._refresh_answers[session_id] = answer

    async def Logout(self, request: identity_pb2.LogoutRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        principal = current()
        assert isinstance(principal, SubscriberPrincipal)  # the policy admits subscribers only
        await self._revoke(principal.username, [principal.session_id], "logout")
        return empty_pb2.Empty()

    async def _revoke(self, username: str, session_ids: list[str], reason: str) -> list[str]:
        """Revoke sessions and tell their devices. Returns the ids revoked."""
        now = self._clock()
        revoked: list[str] = []
        for session_id in session_ids:
            revoked += await self._store.revoke_sessions(reason=reason, now=now, session_id=session_id)
        await self._after_revoke(username, revoked, reason, now)
        return revoked

    async def _revoked_elsewhere(self, username: str, session_id: str, reason: str) -> None:
        self._subscriber_cache.pop(username, None)
        await self._tell_revoked(username, session_id, reason)
        await self._announce_revoked(SessionsRevoked(username, (session_id,), reason, elsewhere=True))

    async def _tell_revoked(self, username: str, session_id: str, reason: str) -> None:
        final = events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=session_id, reason=reason))
        await self._events.close(session_id, final)
        await self._devices.ended(username, session_id)

    async def _after_revoke(self, username: str, revoked: list[str], reason: str, now: float) -> None:
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

    # -- introspection ------------------------------------------------
    async def VerifyToken(
        self, request: identity_pb2.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.VerifyTokenResponse:
        errors.require("token", request.token)
        if request.token.count(".") != 2:
            return identity_pb2.VerifyTokenResponse(active=False, reason=Reason.MALFORMED)
        verdict = await self._verify(request.token)
        if not isinstance(verdict, SubscriberPrincipal):
            return identity_pb2.VerifyTokenResponse(active=False, reason=verdict)
        known = await self._known_subscriber(verdict.username)
        assert known is not None  # _verify checked it
        return identity_pb2.VerifyTokenResponse(
            active=True,
            subscriber=known.message,
            permissions=known.message.permissions,
            session_id=verdict.session_id,
            expire_time=timestamp(verdict.expires_at),
        )

    async def Authorize(
        self, request: identity_pb2.AuthorizeRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.AuthorizeResponse:
        errors.require("token", request.token)
        errors.require("action", request.action)
        errors.max_length("action", request.action, 64)
        errors.max_length("target", request.target, 256)
        verdict = await self._verify(request.token) if request.token.count(".") == 2 else Reason.MALFORMED
        if not isinstance(verdict, SubscriberPrincipal):
            return identity_pb2.AuthorizeResponse(allowed=False, reason=f"token not active: {Reason.Name(verdict)}")
        decision = rules.authorize(verdict.permissions, request.action, request.target)
        return identity_pb2.AuthorizeResponse(allowed=decision.allowed, reason=decision.reason)

    async def GetJwks(
        self, request: identity_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Jwks:
        return identity_pb2.Jwks(keys=[identity_pb2.Jwk(**key) for key in self._keys.jwks()])

    # -- subscribers --------------------------------------------------
    def _subscriber_pb(self, row: SubscriberRow) -> identity_pb2.Subscriber:
        return identity_pb2.Subscriber(
            username=row.username,
            display_name=row.display_name,
            phone_numbers=row.phone_numbers,
            email=row.email,
            roles=row.roles,
            permissions=sorted(rules.permissions_for(row.roles, self.role_map)),
            disabled=row.disabled,
            create_time=timestamp(row.create_time),
            update_time=timestamp(row.update_time),
        )

    def _phones(self, field: str, numbers: list[str]) -> tuple[str, ...]:
        if len(numbers) > 10:
            raise errors.invalid(field, "at most 10 phone numbers are allowed")
        out: list[str] = []
        for index, raw in enumerate(numbers):
            try:
                number = normalize_e164(raw, self._config.phones.default_region)
            except InvalidPhoneNumber as exc:
                raise errors.invalid(f"{field}[{index}]", str(exc)) from None
            if number not in out:
                out.append(number)
        return tuple(out)

    async def create(
        self,
        subscriber: identity_pb2.Subscriber,
    ) -> SubscriberRow:
        """Validate and create a subscriber (also used by the admin CLI)."""
        rules.check_username("subscriber.username", subscriber.username)
        errors.require("subscriber.password", subscriber.password)
        rules.check_password("subscriber.password", subscriber.password)
        errors.max_length("subscriber.display_name", subscriber.display_name, rules.MAX_DISPLAY_NAME)
        rules.check_email("subscriber.email", subscriber.email)
        roles = tuple(subscriber.roles) or ("user",)
        rules.check_roles("subscriber.roles", roles, self.role_map)
        now = self._clock()
        row = SubscriberRow(
            username=subscriber.username,
            display_name=subscriber.display_name or subscriber.username,
            phone_numbers=self._phones("subscriber.phone_numbers", list(subscriber.phone_numbers)),
            email=subscriber.email,
            roles=roles,
            disabled=subscriber.disabled,
            password_hash=await hash_password(subscriber.password),
            create_time=now,
            update_time=now,
        )
        try:
            await self._store.create_subscriber(row)
        except Duplicate:
            raise errors.already_exists(f"subscriber '{row.username}' already exists") from None
        except NumberTaken as taken:
            raise _number_taken("subscriber.phone_numbers", row.phone_numbers, taken) from None
        await self._notify(row.username, row)
        return row

    async def _notify(self, username: str, row: SubscriberRow | None) -> None:
        self._subscriber_cache.pop(username, None)
        for listener in self._subscriber_listeners:
            await listener(username, row)

    async def CreateSubscriber(
        self, request: identity_pb2.CreateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        return self._subscriber_pb(await self.create(request.subscriber))

    async def _existing(self, username: str, field: str = "username") -> SubscriberRow:
        errors.require(field, username)
        row = await self._store.get_subscriber(username)
        if row is None:
            raise errors.not_found(f"subscriber '{username[:64]}' does not exist")
        return row

    async def GetSubscriber(
        self, request: identity_pb2.GetSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        principal = current()
        if (
            isinstance(principal, SubscriberPrincipal)
            and principal.username != request.username
            and not principal.has("admin")
        ):
            raise errors.permission_denied("subscribers may read only their own record")
        return self._subscriber_pb(await self._existing(request.username))

    async def ListSubscribers(
        self, request: identity_pb2.ListSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListSubscribersResponse:
        size = page_size(request.page_size)
        after = decode_token(request.page_token) or ""
        if not isinstance(after, str):
            raise errors.invalid("page_token", "is not a page token this method returned")
        rows = await self._store.list_subscribers(after, size + 1)
        next_token = encode_token(rows[size - 1].username) if len(rows) > size else ""
        return identity_pb2.ListSubscribersResponse(
            subscribers=[self._subscriber_pb(r) for r in rows[:size]], next_page_token=next_token
        )

    async def update(self, subscriber: identity_pb2.Subscriber, paths: list[str]) -> SubscriberRow:
        """Apply an update mask (also used by the admin CLI)."""
        row = await self._existing(subscriber.username, "subscriber.username")
        if not paths:
            paths = [f.name for f, _ in subscriber.ListFields() if f.name != "username"]
        changes: dict[str, object] = {}
        for path in paths:
            if path not in UPDATABLE:
                raise errors.invalid(
                    "update_mask", f"field {path!r} cannot be updated; updatable: {', '.join(UPDATABLE)}"
                )
            field = f"subscriber.{path}"
            if path == "display_name":
                errors.max_length(field, subscriber.display_name, rules.MAX_DISPLAY_NAME)
                changes[path] = subscriber.display_name or row.username
            elif path == "phone_numbers":
                changes[path] = self._phones(field, list(subscriber.phone_numbers))
            elif path == "email":
                rules.check_email(field, subscriber.email)
                changes[path] = subscriber.email
            elif path == "roles":
                rules.check_roles(field, subscriber.roles, self.role_map)
                changes[path] = tuple(subscriber.roles)
            elif path == "disabled":
                changes[path] = subscriber.disabled
            elif path == "password":
                rules.check_password(field, subscriber.password)
                changes["password_hash"] = await hash_password(subscriber.password)
        updated = replace(row, **changes, update_time=self._clock())  # type: ignore[arg-type]
        try:
            await self._store.update_subscriber(updated)
        except NumberTaken as taken:
            raise _number_taken("subscriber.phone_numbers", updated.phone_numbers, taken) from None
        if updated.disabled and not row.disabled:
            await self._revoke_all(row.username, "disabled")
        elif "password_hash" in changes:
            await self._revoke_all(row.username, "password_changed")
        await self._notify(row.username, updated)
        return updated

    async def UpdateSubscriber(
        self, request: identity_pb2.UpdateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        errors.require("subscriber.username", request.subscriber.username)
        return self._subscriber_pb(await self.update(request.subscriber, list(request.update_mask.paths)))

    async def DeleteSubscriber(
        self, request: identity_pb2.DeleteSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        row = await self._existing(request.username)
        await self._revoke_all(row.username, "deleted")
        await self._store.delete_subscriber(row.username)
        await self._notify(row.username, None)
        return empty_pb2.Empty()

    async def GetPhoneNumberOwner(
        self, request: identity_pb2.GetPhoneNumberOwnerRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.PhoneNumberOwner:
        errors.require("phone_number", request.phone_number)
        errors.max_length("phone_number", request.phone_number, 64)
        try:
            number = normalize_e164(request.phone_number, self._config.phones.default_region)
        except InvalidPhoneNumber as exc:
            raise errors.invalid("phone_number", str(exc)) from None
        holder = await self._store.holder_of_number(number)
        if holder is None:
            raise errors.not_found(f"no subscriber holds the phone number {number}")
        return identity_pb2.PhoneNumberOwner(phone_number=number, subscriber=holder)

    async def _revoke_all(self, username: str, reason: str) -> int:
        now = self._clock()
        revoked = await self._store.revoke_sessions(reason=reason, now=now, username=username)
        await self._after_revoke(username, revoked, reason, now)
        return len(revoked)

    async def RevokeSessions(
        self, request: identity_pb2.RevokeSessionsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RevokeSessionsResponse:
        row = await self._existing(request.username)
        return identity_pb2.RevokeSessionsResponse(revoked_count=await self._revoke_all(row.username, "revoked"))

    # -- API keys (admin CLI) -----------------------------------------
    async def create_api_key(self, name: str, scopes: list[str]) -> str:
        _check_api_key(name, scopes)
        key_id, key, secret_hash = apikeys.new_key()
        try:
            await self._store.create_api_key(ApiKeyRow(key_id, name, secret_hash, tuple(scopes), self._clock(), None))
        except Duplicate:
            raise errors.already_exists(f"an API key named '{name}' already exists") from None
        return key

    async def list_api_keys(self) -> list[ApiKeyRow]:
        """Every key, live, rotated or revoked, by name then age."""
        return await self._store.list_api_keys()

    async def revoke_api_key(self, name: str) -> int:
        """End every key named ``name`` now (a rotated one's grace too).
        Other cores refuse it from their next revocation poll."""
        now = self._clock()
        ended = await self._store.end_api_keys(name, now)
        if not ended:
            raise errors.not_found(f"no API key named '{name[:64]}' is live")
        for key_id in ended:
            self._revocations.key_ends(key_id, now)
        log.info("API key revoked", extra={"api_key": name})
        return len(ended)

    async def rotate_api_key(self, name: str, grace: float = DEFAULT_ROTATION_GRACE) -> str:
        """A new key for ``name`` with the same scopes; the one it replaces
        keeps working ``grace`` seconds more. Returns the new key (to show once)."""
        if not 0 <= grace <= 90 * 86400:
            raise errors.invalid("grace", "must be 0 to 7776000 seconds (90 days)")
        live = [row for row in await self._store.list_api_keys() if row.name == name and row.revoke_time is None]
        if not live:
            raise errors.not_found(f"no API key named '{name[:64]}' is live")
        now = self._clock()
        key_id, key, secret_hash = apikeys.new_key()
        row = ApiKeyRow(key_id, name, secret_hash, live[0].scopes, now, None)
        try:
            ended = await self._store.replace_api_key(row, now + grace, require_live=True)
        except Duplicate:
            raise errors.aborted(f"API key '{name}' was changed meanwhile; try again") from None
        if ended is None:
            raise errors.aborted(f"API key '{name}' was changed meanwhile; try again")
        for old in ended:
            self._revocations.key_ends(old, now + grace)
        log.info("API key rotated", extra={"api_key": name, "grace": grace})
        return key

    async def provision_service_key(self, name: str, scopes: list[str], path: Path) -> str:
        """The API key of a wac-internal service, kept only in ``path``
        (mode 0600, in the data dir), never printed or logged.

        The key in the file is returned while it authenticates with exactly
        these scopes; otherwise a new key is made under ``name`` (ending
        every earlier key of that name at once) and written to the file."""
        _check_api_key(name, scopes)
        current = service_keys.read_key(path)
        if current is not None:
            known = await self._known_api_key(current)
            if (
                known is not None
                and known.end is None
                and known.principal.key_name == name
                and known.principal.scopes == frozenset(scopes)
            ):
                return current
        now = self._clock()
        key_id, key, secret_hash = apikeys.new_key()
        row = ApiKeyRow(key_id, name, secret_hash, tuple(scopes), now, None)
        # Keys of this name still in a rotation's grace end now too.
        for old in await self._store.end_api_keys(name, now):
            self._revocations.key_ends(old, now)
        try:
            await self._store.replace_api_key(row, now, require_live=False)
        except Duplicate:
            # Another core provisioned the same service at the same moment.
            raise errors.aborted(f"service key '{name}' was provisioned meanwhile; try again") from None
        await asyncio.to_thread(service_keys.write_key, path, key)
        log.info("provisioned service key", extra={"api_key": name, "path": str(path)})
        return key


def _number_taken(field: str, numbers: tuple[str, ...], taken: NumberTaken) -> errors.ApiError:
    """ALREADY_EXISTS naming the list entry that another subscriber holds."""
    where = f"{field}[{numbers.index(taken.number)}]" if taken.number in numbers else field
    holder = f"subscriber '{taken.holder}'" if taken.holder else "another subscriber"
    message = f"{where}: the phone number {taken.number} belongs to {holder}"
    return errors.ApiError(grpc.StatusCode.ALREADY_EXISTS, message, field=where)


def _check_api_key(name: str, scopes: list[str]) -> None:
    if not name or len(name) > 64:
        raise errors.invalid("name", "must be 1 to 64 characters")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise errors.invalid("scope", f"unknown or missing scope(s) {unknown}; known: {', '.join(sorted(SCOPES))}")


_INACTIVE_MESSAGES: dict[identity_pb2.VerifyTokenResponse.Reason, str] = {
    Reason.MALFORMED: "the access token is malformed",
    Reason.INVALID_SIGNATURE: "the access token's signature is invalid",
    Reason.EXPIRED: "the access token has expired; refresh the session",
    Reason.REVOKED: "the session was revoked; log in again",
    Reason.DISABLED: "the subscriber is disabled",
}
