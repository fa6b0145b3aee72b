"""The private signing keys at rest: sealed under identity.key_seal_secret.

A sealed key is the private JWK sealed with AES-256-GCM by the same cipher
that seals the connectors' OAuth tokens (``core.cipher``), bound to
its key id, so a sealed key copied into another row does not open there.
A clear key (stored before a secret was configured) is still read, and the
caller seals it in place.
"""

from __future__ import annotations

import base64
import binascii

from core.cipher import SealError, TokenCipher
from settings.config import ConfigError

SECRET_HINT = "identity.key_seal_secret (WAC_IDENTITY_KEY_SEAL_SECRET)"


def cipher_for(secret: str) -> TokenCipher | None:
    """The cipher of a configured secret, None when none is configured."""
    if not secret:
        return None
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{SECRET_HINT}: must be 32 random bytes in base64 (openssl rand -base64 32)")
    return TokenCipher(key)


def is_sealed(stored: str) -> bool:
    # A clear key is a JSON object; a sealed one starts with the cipher's version.
    return not stored.lstrip().startswith("{")


def seal(cipher: TokenCipher, kid: str, private_jwk: str) -> str:
    return cipher.seal(private_jwk.encode(), context=_context(kid))


def open_key(cipher: TokenCipher | None, kid: str, stored: str) -> str:
    """The private JWK of a stored key. ConfigError (no traceback for the
    operator) when it is sealed and the secret is missing or wrong."""
    if not is_sealed(stored):
        return stored
    if cipher is None:
        raise ConfigError(
            f"the signing keys are sealed but {SECRET_HINT} is not set; start with the secret they were sealed with"
        )
    try:
        return cipher.open(stored, context=_context(kid)).decode()
    except SealError:
        raise ConfigError(
            f"signing key {kid} does not open with {SECRET_HINT}: the secret is not the one it was sealed with"
        ) from None


def _context(kid: str) -> str:
    return f"signing_keys:{kid}"
