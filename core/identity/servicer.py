"""IdentityService: translates the protobuf API to identity operations.

Rules are in ``rules.py``, SQL in ``store.py``, token crypto in
``tokens.py``; this module sequences them and speaks gRPC.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

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
from core.identity import apikeys, rules
from core.identity.passwords import hash_password, verify_password
from core.identity.revocations import RevocationCache
from core.identity.store import ApiKeyRow, Duplicate, IdentityStore, SessionRow, SubscriberRow
from core.identity.tokens import KeyRing, TokenInvalid, new_private_key
from core.paging import decode_token, encode_token, page_size
from core.phones import InvalidPhoneNumber, normalize_e164
from wac.config import Config
from wac.v1 import events_pb2, identity_pb2, identity_pb2_grpc

log = logging.getLogger("wac.identity")

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


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        config: Config,
        store: IdentityStore,
        events: EventLog,
        devices: DeviceRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._ttl = config.identity.access_token_ttl
        self._store = store
        self._events = events
        self._devices = devices
        self._clock = clock
        self._keys = KeyRing(config.identity.issuer)
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
        self._subscriber_listeners: list[SubscriberListener] = []
        self._api_keys: dict[str, tuple[ServicePrincipal, float]] = {}
        self._subscriber_cache: dict[str, tuple[_Known | None, float]] = {}
        self._key_reload_after = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        await self._ensure_signing_key()
        await self._revocations.load()
        self._revocations.on_revoked_elsewhere(self._revoked_elsewhere)
        self._tasks.append(asyncio.create_task(self._revocations.run(), name="revocation-poll"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def on_subscriber_changed(self, listener: SubscriberListener) -> None:
        self._subscriber_listeners.append(listener)

    @property
    def role_map(self) -> Mapping[str, tuple[str, ...]]:
        return self._config.roles

    async def _ensure_signing_key(self) -> None:
        rows = await self._store.signing_keys()
        now = self._clock()
        rotate_after = self._config.identity.key_rotation_days * 86400
        if not rows or now - max(r[2] for r in rows) > rotate_after:
            kid, jwk = new_private_key()
            await self._store.add_signing_key(kid, jwk, now)
            log.info("generated signing key %s", kid)
            # Keys older than a rotation plus a token lifetime sign nothing
            # that is still valid: drop them.
            stale = [r[0] for r in rows if now - r[2] > rotate_after + self._ttl + 60]
            if stale:
                await self._store.drop_signing_keys(stale)
            rows = await self._store.signing_keys()
        self._keys.load(rows)

    async def _reload_keys_for(self, token_error: TokenInvalid) -> bool:
        """A token with an unknown kid may come from a key another core just
        made: reload the ring, at most once a second."""
        now = self._clock()
        if token_error.reason != "UNKNOWN_KEY" or now < self._key_reload_after:
            return False
        self._key_reload_after = now + 1.0
        self._keys.load(await self._store.signing_keys())
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
        if claims.expires_at <= self._clock():
            return Reason.EXPIRED
        revoked = self._revocations.reason(claims.session_id)
        if revoked is not None:
            return Reason.DISABLED if revoked in ("disabled", "deleted") else Reason.REVOKED
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
        now = self._clock()
        hit = self._api_keys.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        parts = apikeys.split(key)
        row = await self._store.get_api_key(parts[0]) if parts else None
        if (
            parts is None
            or row is None
            or row.revoke_time is not None
            or not apikeys.matches(parts[1], row.secret_hash)
        ):
            raise errors.unauthenticated("unknown or revoked API key", reason="UNKNOWN_API_KEY")
        principal = ServicePrincipal(key_name=row.name, scopes=frozenset(row.scopes))
        if len(self._api_keys) > 10_000:
            self._api_keys.clear()
        self._api_keys[key] = (principal, now + 5.0)
        return principal

    # -- sessions -----------------------------------------------------
    async def Login(
        self, request: identity_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Session:
        errors.require("username", request.username)
        errors.require("password", request.password)
        errors.max_length("username", request.username, 64)
        errors.max_length("password", request.password, rules.MAX_PASSWORD)
        errors.max_length("device_name", request.device_name, rules.MAX_DEVICE_NAME)
        now = self._clock()
        keys = [f"user:{request.username}"]
        if client_address():
            keys.append(f"addr:{client_address()}")
        for key in keys:
            wait = rules.throttle_wait(await self._store.throttle_state(key), self._throttle, now)
            if wait > 0:
                what = "this username" if key.startswith("user:") else "this client address"
                raise errors.exhausted(
                    f"too many failed logins for {what}; try again in {int(wait) + 1} s",
                    retry_after=wait,
                )
        row = await self._store.get_subscriber(request.username)
        ok = await verify_password(row.password_hash if row else None, request.password)
        if not ok or row is None:
            for key in keys:
                state = rules.record_failure(await self._store.throttle_state(key), self._throttle, now)
                await self._store.put_throttle_state(key, state)
            raise errors.unauthenticated("wrong username or password", reason="BAD_CREDENTIALS")
        if row.disabled:
            raise errors.permission_denied(f"subscriber '{row.username}' is disabled")
        await self._store.clear_throttle(keys[0])
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
        return identity_pb2.Session(
            session_id=session_id,
            access_token=token,
            expire_time=timestamp(expires),
            refresh_token=f"{session_id}.{generation}.{secret}",
            refresh_expire_time=timestamp(refresh_expire),
            subscriber=self._subscriber_pb(row),
            device_name=device_name,
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
        session = await self._store.get_session(session_id)
        now = self._clock()
        if session is None:
            raise errors.unauthenticated("unknown refresh token", reason="UNKNOWN_SESSION")
        if session.revoke_time is not None:
            raise errors.unauthenticated(f"the session was ended ({session.revoke_reason})", reason="REVOKED")
        presented = _hash_refresh(secret)
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
        # A retry within the grace rotates from the current generation, so
        # the answer that was lost becomes useless too.
        generation = session.refresh_generation
        if session.refresh_expire_time <= now:
            raise errors.unauthenticated("the refresh token has expired; log in again", reason="EXPIRED")
        row = await self._store.get_subscriber(session.username)
        if row is None or row.disabled:
            raise errors.unauthenticated("the subscriber is disabled", reason="DISABLED")
        new_secret = secrets.token_urlsafe(32)
        refresh_expire = now + self._config.identity.refresh_token_ttl
        if not await self._store.rotate_refresh(session_id, generation, _hash_refresh(new_secret), refresh_expire, now):
            raise errors.unauthenticated(
                "this refresh token was already used; the session is revoked", reason="REFRESH_TOKEN_REUSED"
            )
        await self._events.open(session_id, row.username)
        return self._session(row, session_id, session.device_name, generation + 1, new_secret, refresh_expire, now)

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

    async def _tell_revoked(self, username: str, session_id: str, reason: str) -> None:
        final = events_pb2.Event(session_revoked=events_pb2.SessionRevoked(session_id=session_id, reason=reason))
        await self._events.close(session_id, final)
        await self._devices.ended(username, session_id)

    async def _after_revoke(self, username: str, revoked: list[str], reason: str, now: float) -> None:
        for session_id in revoked:
            self._revocations.add(session_id, reason, now)
            await self._tell_revoked(username, session_id, reason)

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
        await self._store.update_subscriber(updated)
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
        if not name or len(name) > 64:
            raise errors.invalid("name", "must be 1 to 64 characters")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise errors.invalid("scope", f"unknown or missing scope(s) {unknown}; known: {', '.join(sorted(SCOPES))}")
        key_id, key, secret_hash = apikeys.new_key()
        try:
            await self._store.create_api_key(ApiKeyRow(key_id, name, secret_hash, tuple(scopes), self._clock(), None))
        except Duplicate:
            raise errors.already_exists(f"an API key named '{name}' already exists") from None
        return key


_INACTIVE_MESSAGES: dict[identity_pb2.VerifyTokenResponse.Reason, str] = {
    Reason.MALFORMED: "the access token is malformed",
    Reason.INVALID_SIGNATURE: "the access token's signature is invalid",
    Reason.EXPIRED: "the access token has expired; refresh the session",
    Reason.REVOKED: "the session was revoked; log in again",
    Reason.DISABLED: "the subscriber is disabled",
}
