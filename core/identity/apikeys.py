"""API keys for services: ``wac_<key id>_<secret>``.

The secret is 256 random bits, so a plain SHA-256 of it is as strong as a
slow hash would be, and lets every call be checked in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_key() -> tuple[str, str, str]:
    """(key id, full key to show once, secret hash to store)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"wac_{key_id}_{secret}", digest(secret)


def split(key: str) -> tuple[str, str] | None:
    """(key id, secret), or None when the string is not shaped like a key."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "wac" or len(key_id) != 16 or not secret:
        return None
    return key_id, secret


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_hash)
