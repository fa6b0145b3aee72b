"""Passwords are hashed with argon2id at the configured cost (RFC 9106's
low-memory profile by default), and a hash made at another cost still
verifies: the cost is in the hash."""

from __future__ import annotations

import pytest

from core.identity.passwords import Argon2Cost, Passwords
from settings.config import ConfigError, load_config

CHEAP = Argon2Cost(time_cost=1, memory_kib=64, parallelism=1)


async def test_the_default_cost_is_rfc_9106s_low_memory_profile() -> None:
    hashed = await Passwords().hash("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await Passwords().verify(hashed, "correct horse")
    assert not await Passwords().verify(hashed, "wrong horse")


async def test_a_configured_cost_applies_to_new_hashes_and_old_ones_still_verify() -> None:
    cheap, default = Passwords(CHEAP), Passwords()
    hashed = await cheap.hash("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert await default.verify(hashed, "correct horse")
    assert await cheap.verify(await default.hash("correct horse"), "correct horse")
    # No hash (an unknown username): false, after the same work.
    assert not await cheap.verify(None, "correct horse")
    assert not await cheap.verify("not a hash", "correct horse")


def test_the_cost_comes_from_identity_and_is_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_config(None, {"WAC_DATA_DIR": str(tmp_path), "WAC_IDENTITY_ARGON2_TIME_COST": "2"})
    assert (config.identity.argon2_time_cost, config.identity.argon2_memory_kib) == (2, 65536)
    with pytest.raises(ConfigError, match="ARGON2_MEMORY_KIB: must be between 64 and"):
        load_config(None, {"WAC_DATA_DIR": str(tmp_path), "WAC_IDENTITY_ARGON2_MEMORY_KIB": "8"})
