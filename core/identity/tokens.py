"""Access tokens: ES256 JWTs with a key id, signed by a rotating key ring.

ES256 is what every gateway's JOSE library verifies. Verifying an ECDSA
signature costs about a tenth of a millisecond, so tokens already verified
are remembered (bounded); expiry and revocation are still checked on every
call, from memory.

A signature alone does not make a token ours: its lifetime (``exp - iat``)
must not exceed the configured access-token lifetime, so that a token
minted with a stolen key cannot be made to outlive a revocation by months.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from cachetools import FIFOCache
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

ALGORITHM = "ES256"


class TokenInvalid(Exception):
    """The token is not one of ours; ``reason`` is MALFORMED or INVALID_SIGNATURE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    username: str
    session_id: str
    expires_at: float
    issued_at: float


def new_private_key() -> tuple[str, str]:
    """A fresh signing key: (kid, private JWK as JSON)."""
    kid = secrets.token_hex(8)
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return kid, json.dumps(key.as_dict(private=True))


class KeyRing:
    """The keys that sign (the newest) and verify (all kept) access tokens."""

    def __init__(self, issuer: str, max_lifetime: float, cache_size: int = 50_000) -> None:
        self._issuer = issuer
        # wac signs with iat and exp whole seconds apart by the TTL; a second
        # more allows for their rounding.
        self._max_lifetime = max_lifetime + 1.0
        self._keys: dict[str, ECKey] = {}
        self._signing_kid = ""
        # Tokens whose signature verified, the oldest forgotten first.
        self._verified: FIFOCache[str, Claims] = FIFOCache(maxsize=cache_size)

    def load(self, rows: list[tuple[str, str, float]]) -> None:
        """Install (kid, private JWK JSON, create_time) rows; the newest signs."""
        keys = {kid: ECKey.import_key(json.loads(jwk)) for kid, jwk, _ in rows}
        self._keys = keys
        newest = max(rows, key=lambda row: row[2]) if rows else None
        self._signing_kid = newest[0] if newest else ""

    def knows(self, kid: str) -> bool:
        return kid in self._keys

    def sign(self, username: str, session_id: str, now: float, ttl: float) -> tuple[str, float]:
        key = self._keys[self._signing_kid]
        expires_at = int(now + ttl)
        claims = {
            "iss": self._issuer,
            "sub": username,
            "sid": session_id,
            "iat": int(now),
            "exp": expires_at,
            "jti": secrets.token_hex(8),
        }
        header = {"alg": ALGORITHM, "kid": self._signing_kid, "typ": "JWT"}
        token = jwt.encode(header, claims, key, algorithms=[ALGORITHM])
        # Signed here, so known good: the session's first calls (its event
        # subscription follows its login at once) skip the ECDSA check.
        self._verified[token] = Claims(username, session_id, float(expires_at), float(int(now)))
        return token, float(expires_at)

    def verify(self, token: str) -> Claims:
        """Check the signature (once per token) and return the claims.

        Expiry is not checked here: the caller compares ``expires_at`` with
        its clock, so that an expired token gets its own reason.
        """
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        if token.count(".") != 2 or len(token) > 4096:
            raise TokenInvalid("MALFORMED", "the token is not a JWS compact serialization")
        header = _header(token)
        if header.get("kid") not in self._keys:
            raise TokenInvalid("UNKNOWN_KEY", "the token was not signed by a key of this wac")
        try:
            decoded = jwt.decode(token, self._keys[header["kid"]], algorithms=[ALGORITHM])
        except JoseError as exc:
            if "signature" in type(exc).__name__.lower():
                raise TokenInvalid("INVALID_SIGNATURE", "the token's signature does not verify") from None
            raise TokenInvalid("MALFORMED", f"the token cannot be decoded ({exc.error})") from None
        except (ValueError, KeyError, TypeError):
            raise TokenInvalid("MALFORMED", "the token cannot be decoded") from None
        body: dict[str, Any] = decoded.claims
        try:
            claims = Claims(
                username=str(body["sub"]),
                session_id=str(body["sid"]),
                expires_at=float(body["exp"]),
                issued_at=float(body["iat"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenInvalid("MALFORMED", "the token lacks the sub, sid, iat or exp claim") from None
        if body.get("iss") != self._issuer:
            raise TokenInvalid("INVALID_SIGNATURE", "the token was issued by someone else")
        # NaN compares false with everything: it would never expire.
        if not (math.isfinite(claims.expires_at) and math.isfinite(claims.issued_at)):
            raise TokenInvalid("MALFORMED", "the token's iat and exp must be numbers")
        if claims.expires_at - claims.issued_at > self._max_lifetime:
            raise TokenInvalid("MALFORMED", "the token's lifetime exceeds the access-token lifetime")
        self._verified[token] = claims
        return claims

    def jwks(self) -> list[dict[str, Any]]:
        """The public keys, for GetJwks."""
        return [key.as_dict(private=False) for key in self._keys.values()]


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise TokenInvalid("MALFORMED", "the token's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise TokenInvalid("MALFORMED", "the token's header is not a JSON object")
    if header.get("alg") != ALGORITHM:
        raise TokenInvalid("MALFORMED", f"the token's algorithm must be {ALGORITHM}")
    return header
