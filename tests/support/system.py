"""Finding system programs: under CI=true a missing one fails the test
instead of skipping it, so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str, hint: str) -> str:
    path = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if path:
        return path
    message = f"{name} is not installed ({hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI must install it in .ci/run")
    pytest.skip(message)
