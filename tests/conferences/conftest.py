"""Fixtures for the conferences suite: a real core serving conferences over
a recording bridge, per test, on a fake clock that the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conferences.support import Conferences, open_conferences

# TURN with a secret, so that a join's ICE servers carry credentials.
ICE = {
    "WAC_ICE_STUN_URLS": "stun:stun.example.org:3478",
    "WAC_ICE_TURN_URLS": "turn:turn.example.org:3478",
    "WAC_ICE_TURN_SECRET": "turn-secret",
}


@pytest.fixture
async def conferences(tmp_path: Path) -> AsyncIterator[Conferences]:
    async with open_conferences(tmp_path, ICE) as running:
        yield running
