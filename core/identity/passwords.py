"""Password hashing with argon2id."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3,
# m=64 MiB, p=4). Hashing runs in a thread so the event loop keeps serving.
_hasher = PasswordHasher()

# Verified against when the username is unknown, so that a miss costs the
# same time as a hit and does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
