"""The keys identity holds: the signing keys of access tokens (created,
rotated, sealed at rest, reloaded when another core made one) and the API
keys of services (created, rotated, revoked, provisioned for wac's own
services, and checked on every call from memory)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import TTLCache

from core.auth.principal import SCOPES, ServicePrincipal
from core.clock import Clock
from core.failures import Aborted, AlreadyExists, Invalid, NotFound, Unauthenticated
from core.identity import apikeys, sealing, service_keys
from core.identity.revocations import RevocationCache
from core.identity.store import ApiKeyRow, Duplicate, IdentityStore
from core.identity.tokens import Claims, KeyRing, TokenInvalid, new_private_key
from settings.config import ConfigError

log = logging.getLogger("wac.identity")

# How long an API key's row is trusted before it is read again. Its end is
# polled separately (RevocationCache), so this bounds nothing but reads.
API_KEY_CACHE = 60.0
# Keys remembered at most (the least recently used dropped first).
API_KEY_CACHE_SIZE = 10_000
# Last uses of API keys are written in the background, this often at most.
API_KEY_USE_FLUSH = 60.0
# A rotated key's default grace: a day to roll the new key out.
DEFAULT_ROTATION_GRACE = 24 * 3600.0


class SigningKeys:
    """The key ring of access tokens, kept in the store (sealed under
    ``seal_secret`` when one is configured)."""

    def __init__(
        self,
        store: IdentityStore,
        clock: Clock,
        *,
        issuer: str,
        token_ttl: float,
        rotation_days: float,
        seal_secret: str,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = token_ttl
        self._rotate_after = rotation_days * 86400
        self._ring = KeyRing(issuer, max_lifetime=token_ttl)
        # Raises ConfigError for a malformed secret, before anything starts.
        self._seal = sealing.cipher_for(seal_secret)
        self._reload_after = 0.0

    async def ensure(self) -> None:
        """Load the ring, making a new signing key when there is none or the
        newest is older than a rotation."""
        rows = await self._opened(seal_clear=True)
        now = self._clock.time()
        if not rows or now - max(r[2] for r in rows) > self._rotate_after:
            kid, jwk = new_private_key()
            await self._store.add_signing_key(kid, sealing.seal(self._seal, kid, jwk) if self._seal else jwk, now)
            log.info("generated signing key %s", kid)
            # Keys older than a rotation plus a token lifetime sign nothing
            # that is still valid: drop them.
            stale = [r[0] for r in rows if now - r[2] > self._rotate_after + self._ttl + 60]
            if stale:
                await self._store.drop_signing_keys(stale)
            rows = await self._opened(seal_clear=False)
        self._ring.load(rows)

    async def _opened(self, *, seal_clear: bool) -> list[tuple[str, str, float]]:
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

    async def verify(self, token: str) -> Claims:
        """The token's claims if a key of the ring signed it (TokenInvalid
        otherwise); expiry is the caller's to check."""
        try:
            return self._ring.verify(token)
        except TokenInvalid as exc:
            if await self._reload_for(exc):
                return self._ring.verify(token)
            raise

    async def _reload_for(self, token_error: TokenInvalid) -> bool:
        """A token with an unknown kid may come from a key another core just
        made: reload the ring, at most once a second."""
        now = self._clock.time()
        if token_error.reason != "UNKNOWN_KEY" or now < self._reload_after:
            return False
        self._reload_after = now + 1.0
        try:
            self._ring.load(await self._opened(seal_clear=False))
        except ConfigError as exc:
            # Another core sealed a key under a secret this one lacks: keep
            # verifying with the keys already loaded.
            log.error("signing keys not reloaded: %s", exc)
            return False
        return True

    def sign(self, username: str, session_id: str, now: float) -> tuple[str, float]:
        """An access token and its expiry."""
        return self._ring.sign(username, session_id, now, self._ttl)

    def jwks(self) -> list[dict[str, Any]]:
        """The public keys of the ring."""
        return self._ring.jwks()


@dataclass(frozen=True, slots=True)
class _KnownKey:
    """An API key as authentication needs it, read at most once a minute
    (revocations and rotations reach it sooner, through the poll)."""

    principal: ServicePrincipal
    key_id: str
    end: float | None


class ApiKeys:
    """API keys: their lifecycle, and the check of one on every call."""

    def __init__(self, store: IdentityStore, revocations: RevocationCache, clock: Clock) -> None:
        self._store = store
        self._revocations = revocations
        self._clock = clock
        self._known: TTLCache[str, _KnownKey] = TTLCache(
            maxsize=API_KEY_CACHE_SIZE, ttl=API_KEY_CACHE, timer=clock.monotonic
        )
        self._used: dict[str, float] = {}

    async def authenticate(self, key: str) -> ServicePrincipal:
        known = await self._live(key)
        if known is None:
            raise Unauthenticated("unknown or revoked API key", reason="UNKNOWN_API_KEY")
        # A dict write; the database hears of it at most once a minute.
        self._used[known.key_id] = self._clock.time()
        return known.principal

    async def _live(self, key: str) -> _KnownKey | None:
        """The key if it authenticates now: from memory, its row read at
        most once a minute; its end (revoked, or rotated and past its grace)
        known on every core within a poll."""
        try:
            known = self._known[key]
        except KeyError:
            parts = apikeys.split(key)
            row = await self._store.get_api_key(parts[0]) if parts else None
            if parts is None or row is None or not apikeys.matches(parts[1], row.secret_hash):
                return None
            principal = ServicePrincipal(key_name=row.name, scopes=frozenset(row.scopes))
            known = self._known[key] = _KnownKey(principal, row.key_id, row.revoke_time)
        now = self._clock.time()
        ends = [end for end in (known.end, self._revocations.key_end(known.key_id)) if end is not None]
        if ends and min(ends) <= now:
            return None
        return known

    async def record_uses(self) -> None:
        """Write the keys' last uses once a minute, for ever."""
        while True:
            await self._clock.sleep(API_KEY_USE_FLUSH)
            try:
                await self.flush_uses()
            except Exception:
                log.exception("recording API keys' last use failed; retrying")

    async def flush_uses(self) -> None:
        """Write the last uses seen since the previous flush."""
        used, self._used = self._used, {}
        await self._store.record_api_key_use(used)

    async def create(self, name: str, scopes: list[str]) -> str:
        _check(name, scopes)
        key_id, key, secret_hash = apikeys.new_key()
        try:
            await self._store.create_api_key(
                ApiKeyRow(key_id, name, secret_hash, tuple(scopes), self._clock.time(), None)
            )
        except Duplicate:
            raise AlreadyExists(f"an API key named '{name}' already exists") from None
        return key

    async def rows(self) -> list[ApiKeyRow]:
        return await self._store.list_api_keys()

    async def revoke(self, name: str) -> int:
        now = self._clock.time()
        ended = await self._store.end_api_keys(name, now)
        if not ended:
            raise NotFound(f"no API key named '{name[:64]}' is live")
        for key_id in ended:
            self._revocations.key_ends(key_id, now)
        log.info("API key revoked", extra={"api_key": name})
        return len(ended)

    async def rotate(self, name: str, grace: float) -> str:
        if not 0 <= grace <= 90 * 86400:
            raise Invalid("grace", "must be 0 to 7776000 seconds (90 days)")
        live = [row for row in await self._store.list_api_keys() if row.name == name and row.revoke_time is None]
        if not live:
            raise NotFound(f"no API key named '{name[:64]}' is live")
        now = self._clock.time()
        key_id, key, secret_hash = apikeys.new_key()
        row = ApiKeyRow(key_id, name, secret_hash, live[0].scopes, now, None)
        try:
            ended = await self._store.replace_api_key(row, now + grace, require_live=True)
        except Duplicate:
            raise Aborted(f"API key '{name}' was changed meanwhile; try again") from None
        if ended is None:
            raise Aborted(f"API key '{name}' was changed meanwhile; try again")
        for old in ended:
            self._revocations.key_ends(old, now + grace)
        log.info("API key rotated", extra={"api_key": name, "grace": grace})
        return key

    async def provision(self, name: str, scopes: list[str], path: Path) -> str:
        _check(name, scopes)
        current = service_keys.read_key(path)
        if current is not None:
            known = await self._live(current)
            if (
                known is not None
                and known.end is None
                and known.principal.key_name == name
                and known.principal.scopes == frozenset(scopes)
            ):
                return current
        now = self._clock.time()
        key_id, key, secret_hash = apikeys.new_key()
        row = ApiKeyRow(key_id, name, secret_hash, tuple(scopes), now, None)
        # Keys of this name still in a rotation's grace end now too.
        for old in await self._store.end_api_keys(name, now):
            self._revocations.key_ends(old, now)
        try:
            await self._store.replace_api_key(row, now, require_live=False)
        except Duplicate:
            # Another core provisioned the same service at the same moment.
            raise Aborted(f"service key '{name}' was provisioned meanwhile; try again") from None
        await asyncio.to_thread(service_keys.write_key, path, key)
        log.info("provisioned service key", extra={"api_key": name, "path": str(path)})
        return key


def _check(name: str, scopes: list[str]) -> None:
    if not name or len(name) > 64:
        raise Invalid("name", "must be 1 to 64 characters")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise Invalid("scope", f"unknown or missing scope(s) {unknown}; known: {', '.join(sorted(SCOPES))}")
