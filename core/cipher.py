"""Secrets at rest: OAuth tokens sealed with AES-256-GCM under a configured key.

A sealed value is "v1." and the URL-safe base64 of a random 96-bit nonce
followed by the ciphertext and its tag. Each value is bound to a context
(the table and row it belongs in) as associated data, so a sealed token
copied into another subscriber's row does not open there.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1."
_NONCE = 12


class SealError(ValueError):
    """A sealed value does not open: the wrong key, the wrong row, or tampered."""


class TokenCipher:
    """Seals and opens secrets under one key. Its repr shows no key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the token key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "TokenCipher(<key>)"

    def seal(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> bytes:
        if not sealed.startswith(_PREFIX):
            raise SealError("not a sealed value of a known version")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError(f"the sealed value for {context} does not open") from None

    def seal_json(self, value: Any, *, context: str) -> str:
        return self.seal(json.dumps(value, separators=(",", ":")).encode(), context=context)

    def open_json(self, sealed: str, *, context: str) -> Any:
        return json.loads(self.open(sealed, context=context))
