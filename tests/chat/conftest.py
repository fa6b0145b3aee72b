"""Fixtures for the chat suite: a real core serving MessagesService, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chat.support import Chat, open_chat
from tests.support.clock import FakeClock


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[Chat]:
    async with open_chat(tmp_path, clock=FakeClock()) as running:
        yield running
