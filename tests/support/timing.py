"""Every timeout in the tests is a multiple of one constant, scaled by
WAC_TEST_TIMEOUT_SCALE on a slow machine (as websockets' own tests do)."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("WAC_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 5.0 * SCALE


def seconds(multiple: float = 1.0) -> float:
    return TIMEOUT * multiple
