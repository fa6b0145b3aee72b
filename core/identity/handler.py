"""The identity handler: the use cases of IdentityService and of ``wac
admin``, over the store, the event log, the device registry and a clock.

Rules are in ``rules.py``, SQL in ``store.py``, token crypto in
``tokens.py``; the throttled password check in ``logins.py``, the signing
and API keys in ``keys.py``, refresh rotation and the revocation fan-out in
``sessions.py``. This module sequences them and raises the domain's
failures (``core/failures.py``); it knows no gRPC.

Guarantees:

- A revocation (logout, RevokeSessions, disabling, deleting, a new
  password, a reused refresh token) stops the sessions' tokens on this core
  at once, closes their event streams with a final ``session_revoked``,
  tells their devices, then the sessions-revoked listeners; other cores
  (and a running core, of the admin CLI's revocations) learn of it within
  ``[identity] revocation_poll`` seconds.
- A refresh token is rotated once (see ``sessions.py``).
- Every change of a subscriber is told to the subscriber listeners before
  the call that made it answers, and evicted from the subscriber read-cache
  (``subscribers.py``, shared with calls and presence) before them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from core import metrics
from core.auth.principal import Principal, SubscriberPrincipal
from core.checks import max_length, require
from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.devices import DeviceRegistry
from core.events.log import EventLog
from core.failures import (
    AlreadyExists,
    Exhausted,
    Invalid,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from core.identity import rules
from core.identity.keys import DEFAULT_ROTATION_GRACE, ApiKeys, SigningKeys
from core.identity.limits import PasswordChecks
from core.identity.logins import Logins
from core.identity.passwords import Argon2Cost, Passwords
from core.identity.results import Inactive, IssuedSession, Verified
from core.identity.revocations import (
    RevocationCache,
    SessionsRevokedListener,
)
from core.identity.sessions import Sessions
from core.identity.store import ApiKeyRow, Duplicate, IdentityStore, NumberTaken, SubscriberRow
from core.identity.subscribers import SubscriberCache
from core.identity.tokens import TokenInvalid
from core.phones import InvalidPhoneNumber, normalize_e164
from settings.config import Config

log = logging.getLogger("wac.identity")

SubscriberListener = Callable[[str, SubscriberRow | None], Awaitable[None]]

UPDATABLE = ("display_name", "phone_numbers", "email", "roles", "disabled", "password")
# iat may lie this far ahead of our clock (another core's clock may run ahead).
IAT_LEEWAY = 30.0
MAX_PHONE_NUMBERS = 10


class SubscriberFields(Protocol):
    """A subscriber as a request gives it (the API's Subscriber message is one)."""

    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def phone_numbers(self) -> Sequence[str]: ...
    @property
    def email(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def disabled(self) -> bool: ...


class IdentityHandler:
    def __init__(
        self,
        config: Config,
        store: IdentityStore,
        events: EventLog,
        devices: DeviceRegistry,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        identity = config.identity
        self._config = config
        self._store = store
        self._clock = clock
        self._keys = SigningKeys(
            store,
            clock,
            issuer=identity.issuer,
            token_ttl=identity.access_token_ttl,
            rotation_days=identity.key_rotation_days,
            seal_secret=identity.key_seal_secret,
        )
        self._revocations = RevocationCache(
            store, interval=identity.revocation_poll, keep_for=identity.access_token_ttl + 60, clock=clock
        )
        self._api_keys = ApiKeys(store, self._revocations, clock)
        self._passwords = Passwords(
            Argon2Cost(
                time_cost=identity.argon2_time_cost,
                memory_kib=identity.argon2_memory_kib,
                parallelism=identity.argon2_parallelism,
            )
        )
        self._logins = Logins(
            store,
            clock,
            throttle=rules.ThrottlePolicy(
                after=identity.throttle_after,
                delay=identity.throttle_delay,
                lock_after=identity.lock_after,
                lock_seconds=identity.lock_seconds,
                window=identity.throttle_window,
            ),
            checks=PasswordChecks(
                total=identity.max_password_checks,
                per_address=identity.max_logins_per_address,
                queue=identity.password_check_queue,
                queue_per_address=identity.login_queue_per_address,
            ),
            username_max_delay=identity.username_max_delay,
            passwords=self._passwords,
        )
        # Public so that tests (and a future metric) can see how many
        # password checks run at once.
        self.password_checks = self._logins.checks
        self._sessions = Sessions(identity, store, events, devices, self._keys, self._revocations, clock)
        self._subscriber_listeners: list[SubscriberListener] = []
        # Verification reads subscribers from here; calls and presence too
        # (the composition root hands it to them). Every change made here
        # evicts the subscriber's entry before the listeners hear of it.
        self._subscribers = SubscriberCache(store, config.roles, clock)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        """Load the keys and the revocations, and start the background work
        of a serving core (the admin CLI does without)."""
        await self._keys.ensure()
        await self._revocations.load()
        self._revocations.on_revoked_elsewhere(self._revoked_elsewhere)
        self._tasks.append(asyncio.create_task(self._revocations.run(), name="revocation-poll"))
        self._tasks.append(asyncio.create_task(self._api_keys.record_uses(), name="api-key-uses"))
        self._tasks.append(asyncio.create_task(self._logins.purge(), name="throttle-purge"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._api_keys.flush_uses()
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
        self._sessions.on_revoked(listener)

    @property
    def role_map(self) -> Mapping[str, tuple[str, ...]]:
        return self._config.roles

    @property
    def subscribers(self) -> SubscriberCache:
        """The shared read-cache of subscribers (see ``subscribers.py``)."""
        return self._subscribers

    # -- authentication (the interceptor calls this) -------------------
    async def authenticate(self, bearer: str) -> Principal:
        """The caller an access token or an API key stands for;
        Unauthenticated, with the token's reason, when it stands for none."""
        if bearer.count(".") == 2:
            verdict = await self._verify(bearer)
            if isinstance(verdict, Inactive):
                raise Unauthenticated(verdict.message, reason=verdict.name)
            return verdict.principal
        return await self._api_keys.authenticate(bearer)

    async def _verify(self, token: str) -> Verified | Inactive:
        """The caller of a valid token, or the reason it is not active."""
        try:
            claims = await self._keys.verify(token)
        except TokenInvalid as exc:
            return Inactive.MALFORMED if exc.reason == "MALFORMED" else Inactive.INVALID_SIGNATURE
        now = self._clock.time()
        if claims.expires_at <= now:
            return Inactive.EXPIRED
        if claims.issued_at > now + IAT_LEEWAY:
            return Inactive.MALFORMED
        revoked = self._revocations.reason(claims.session_id)
        if revoked is not None:
            return Inactive.DISABLED if revoked in ("disabled", "deleted") else Inactive.REVOKED
        # A session never issued (a token minted with a stolen key) counts as
        # revoked: from memory, or one bounded lookup for a session too new.
        if not await self._revocations.is_issued(claims.session_id):
            return Inactive.REVOKED
        # From memory: a disabled subscriber is refused within the cache's
        # staleness bound everywhere (disabling also revokes the sessions,
        # which is immediate locally).
        known = await self._subscribers.get(claims.username)
        if known is None or known.row.disabled:
            return Inactive.DISABLED
        principal = SubscriberPrincipal(
            username=claims.username,
            session_id=claims.session_id,
            permissions=known.permissions,
            expires_at=claims.expires_at,
        )
        return Verified(principal, known.row)

    # -- introspection ------------------------------------------------
    async def verify_token(self, token: str) -> Verified | Inactive:
        """VerifyToken: the token's caller, or why it is not active."""
        require("token", token)
        started = time.perf_counter()
        verdict = await self._verify(token) if token.count(".") == 2 else Inactive.MALFORMED
        metrics.TOKEN_VERIFICATION_DURATION.observe(time.perf_counter() - started)
        metrics.TOKEN_VERIFICATIONS_BY("active" if isinstance(verdict, Verified) else verdict.name.lower()).inc()
        return verdict

    async def authorize(self, token: str, action: str, target: str) -> rules.Decision:
        """Authorize: may the token's subscriber do ``action`` on ``target``?"""
        require("token", token)
        require("action", action)
        max_length("action", action, 64)
        max_length("target", target, 256)
        verdict = await self._verify(token) if token.count(".") == 2 else Inactive.MALFORMED
        if isinstance(verdict, Inactive):
            return rules.Decision(False, f"token not active: {verdict.name}")
        return rules.authorize(verdict.principal.permissions, action, target)

    def jwks(self) -> list[dict[str, Any]]:
        """The public signing keys."""
        return self._keys.jwks()

    # -- sessions -----------------------------------------------------
    async def login(self, username: str, password: str, device_name: str, address: str) -> IssuedSession:
        """A new session for the subscriber whose password this is, from
        ``address`` (the client's; empty for in-process calls)."""
        try:
            require("username", username)
            require("password", password)
            max_length("username", username, 64)
            max_length("password", password, rules.MAX_PASSWORD)
            max_length("device_name", device_name, rules.MAX_DEVICE_NAME)
            row, now = await self._logins.check(username, password, address)
            if row.disabled:
                raise PermissionDenied(f"subscriber '{row.username}' is disabled")
            issued = await self._sessions.open(row, device_name, now)
        except BaseException as exc:
            metrics.LOGINS_BY(_login_outcome(exc)).inc()
            raise
        metrics.LOGINS_BY("success").inc()
        return issued

    async def refresh(self, refresh_token: str) -> IssuedSession:
        """The session with a new access token and its refresh token rotated."""
        return await self._sessions.refresh(refresh_token)

    async def logout(self, principal: SubscriberPrincipal) -> None:
        """End the caller's own session."""
        await self._sessions.revoke(principal.username, [principal.session_id], "logout")

    async def revoke_sessions(self, username: str) -> int:
        """End every session of a subscriber (RevokeSessions); how many were open."""
        row = await self._existing(username)
        return await self._revoke_all(row.username, "revoked")

    async def _revoke_all(self, username: str, reason: str) -> int:
        return await self._sessions.revoke_all(username, reason)

    async def _revoked_elsewhere(self, username: str, session_id: str, reason: str) -> None:
        self._subscribers.forget(username)
        await self._sessions.revoked_elsewhere(username, session_id, reason)

    # -- subscribers --------------------------------------------------
    def _phones(self, field: str, numbers: Sequence[str]) -> tuple[str, ...]:
        if len(numbers) > MAX_PHONE_NUMBERS:
            raise Invalid(field, f"at most {MAX_PHONE_NUMBERS} phone numbers are allowed")
        out: list[str] = []
        for index, raw in enumerate(numbers):
            try:
                number = normalize_e164(raw, self._config.phones.default_region)
            except InvalidPhoneNumber as exc:
                raise Invalid(f"{field}[{index}]", str(exc)) from None
            if number not in out:
                out.append(number)
        return tuple(out)

    async def create(self, subscriber: SubscriberFields) -> SubscriberRow:
        """Validate and create a subscriber (CreateSubscriber, ``wac admin subscriber add``)."""
        rules.check_username("subscriber.username", subscriber.username)
        require("subscriber.password", subscriber.password)
        rules.check_password("subscriber.password", subscriber.password)
        max_length("subscriber.display_name", subscriber.display_name, rules.MAX_DISPLAY_NAME)
        rules.check_email("subscriber.email", subscriber.email)
        roles = tuple(subscriber.roles) or ("user",)
        rules.check_roles("subscriber.roles", roles, self.role_map)
        now = self._clock.time()
        row = SubscriberRow(
            username=subscriber.username,
            display_name=subscriber.display_name or subscriber.username,
            phone_numbers=self._phones("subscriber.phone_numbers", subscriber.phone_numbers),
            email=subscriber.email,
            roles=roles,
            disabled=subscriber.disabled,
            password_hash=await self._passwords.hash(subscriber.password),
            create_time=now,
            update_time=now,
        )
        try:
            await self._store.create_subscriber(row)
        except Duplicate:
            raise AlreadyExists(f"subscriber '{row.username}' already exists") from None
        except NumberTaken as taken:
            raise _number_taken("subscriber.phone_numbers", row.phone_numbers, taken) from None
        await self._notify(row.username, row)
        return row

    async def _notify(self, username: str, row: SubscriberRow | None) -> None:
        self._subscribers.forget(username)
        for listener in self._subscriber_listeners:
            await listener(username, row)

    async def _existing(self, username: str, field: str = "username") -> SubscriberRow:
        require(field, username)
        row = await self._store.get_subscriber(username)
        if row is None:
            raise NotFound(f"subscriber '{username[:64]}' does not exist")
        return row

    async def find(self, username: str) -> SubscriberRow | None:
        """The subscriber of that name, if there is one."""
        return await self._store.get_subscriber(username)

    async def get_subscriber(self, caller: Principal | None, username: str) -> SubscriberRow:
        """GetSubscriber: a subscriber reads its own record, an admin or a
        service any."""
        if isinstance(caller, SubscriberPrincipal) and caller.username != username and not caller.has("admin"):
            raise PermissionDenied("subscribers may read only their own record")
        return await self._existing(username)

    async def list_subscribers(self, after: str, limit: int) -> list[SubscriberRow]:
        """Up to ``limit`` subscribers by username, after ``after``."""
        return await self._store.list_subscribers(after, limit)

    async def update(self, subscriber: SubscriberFields, paths: Sequence[str]) -> SubscriberRow:
        """Change the fields named in ``paths`` (UpdateSubscriber, ``wac admin
        subscriber passwd/disable/enable``). Disabling or a new password ends
        the subscriber's sessions."""
        row = await self._existing(subscriber.username, "subscriber.username")
        changes: dict[str, object] = {}
        for path in paths:
            if path not in UPDATABLE:
                raise Invalid("update_mask", f"field {path!r} cannot be updated; updatable: {', '.join(UPDATABLE)}")
            field = f"subscriber.{path}"
            if path == "display_name":
                max_length(field, subscriber.display_name, rules.MAX_DISPLAY_NAME)
                changes[path] = subscriber.display_name or row.username
            elif path == "phone_numbers":
                changes[path] = self._phones(field, subscriber.phone_numbers)
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
                changes["password_hash"] = await self._passwords.hash(subscriber.password)
        updated = replace(row, **changes, update_time=self._clock.time())  # type: ignore[arg-type]
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

    async def delete_subscriber(self, username: str) -> None:
        """DeleteSubscriber: its sessions end first."""
        row = await self._existing(username)
        await self._revoke_all(row.username, "deleted")
        await self._store.delete_subscriber(row.username)
        await self._notify(row.username, None)

    async def phone_number_owner(self, phone_number: str) -> tuple[str, str]:
        """(the number in E.164, the username of the subscriber holding it)."""
        require("phone_number", phone_number)
        max_length("phone_number", phone_number, 64)
        try:
            number = normalize_e164(phone_number, self._config.phones.default_region)
        except InvalidPhoneNumber as exc:
            raise Invalid("phone_number", str(exc)) from None
        holder = await self._store.holder_of_number(number)
        if holder is None:
            raise NotFound(f"no subscriber holds the phone number {number}")
        return number, holder

    # -- API keys (admin CLI, service provisioning) -------------------
    async def create_api_key(self, name: str, scopes: list[str]) -> str:
        """A new key (to show once) with these scopes."""
        return await self._api_keys.create(name, scopes)

    async def list_api_keys(self) -> list[ApiKeyRow]:
        """Every key, live, rotated or revoked, by name then age."""
        return await self._api_keys.rows()

    async def revoke_api_key(self, name: str) -> int:
        """End every key named ``name`` now (a rotated one's grace too).
        Other cores refuse it from their next revocation poll."""
        return await self._api_keys.revoke(name)

    async def rotate_api_key(self, name: str, grace: float = DEFAULT_ROTATION_GRACE) -> str:
        """A new key for ``name`` with the same scopes; the one it replaces
        keeps working ``grace`` seconds more. Returns the new key (to show once)."""
        return await self._api_keys.rotate(name, grace)

    async def provision_service_key(self, name: str, scopes: list[str], path: Path) -> str:
        """The API key of a wac-internal service, kept only in ``path``
        (mode 0600, in the data dir), never printed or logged.

        The key in the file is returned while it authenticates with exactly
        these scopes; otherwise a new key is made under ``name`` (ending
        every earlier key of that name at once) and written to the file."""
        return await self._api_keys.provision(name, scopes, path)

    async def flush_api_key_uses(self) -> None:
        """Write the API keys' last uses now (a background task does it once a minute)."""
        await self._api_keys.flush_uses()


def _number_taken(field: str, numbers: tuple[str, ...], taken: NumberTaken) -> AlreadyExists:
    """ALREADY_EXISTS naming the list entry that another subscriber holds."""
    where = f"{field}[{numbers.index(taken.number)}]" if taken.number in numbers else field
    holder = f"subscriber '{taken.holder}'" if taken.holder else "another subscriber"
    return AlreadyExists(f"{where}: the phone number {taken.number} belongs to {holder}", field=where)


def _login_outcome(exc: BaseException) -> str:
    """The outcome label of a login that failed with ``exc``."""
    if isinstance(exc, Unauthenticated):
        return "bad_credentials"
    if isinstance(exc, Exhausted):
        return "throttled"
    if isinstance(exc, PermissionDenied):
        return "disabled"
    if isinstance(exc, Invalid):
        return "invalid"
    return "error" if isinstance(exc, Exception) else "cancelled"
