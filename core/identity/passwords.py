"""Password hashing with argon2id, at the configured cost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@dataclass(frozen=True, slots=True)
class Argon2Cost:
    """argon2id's cost: the default is RFC 9106's second recommended
    (low-memory) profile, argon2-cffi's own: t=3, m=64 MiB, p=4."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


class Passwords:
    """Hashes and checks passwords, each in a thread so the event loop keeps
    serving. A hash carries its own cost: one made at another cost still
    verifies."""

    def __init__(self, cost: Argon2Cost = Argon2Cost()) -> None:
        self._hasher = PasswordHasher(
            time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism
        )
        # Verified against when the username is unknown, so that a miss costs
        # the same time as a hit and does not reveal which usernames exist.
        self._dummy = self._hasher.hash("not a password of anyone")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)
