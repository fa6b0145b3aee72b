"""Finding system programs: under CI=true a missing one fails the test
instead of skipping it, so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """A system part the test needs is absent: fail under CI=true (where
    .ci/run must install it), skip with the reason elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must install it in .ci/run")
    pytest.skip(reason)


def require_program(name: str, hint: str) -> str:
    path = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if path:
        return path
    missing(f"{name} is not installed ({hint})")
