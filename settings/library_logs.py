"""Libraries whose debug logging carries secrets, kept at info whatever
the process's level.

``WAC_LOG_LEVEL=debug`` is for wac's own lines (one per request). Some
libraries write, at debug, what they carry: websockets every header of an
upgrade (the hop key Envoy adds, an ``?access_token=`` in the path) and
every frame (passwords, tokens, SDPs); aiosqlite every statement with its
parameters (password hashes, private signing keys). Each is capped where
it is used. tests/logs/test_no_secrets.py greps a whole `wac run` at debug.

Shared by the core and the edge.
"""

from __future__ import annotations

import logging


def never_below_info(name: str) -> None:
    """Keep the logger ``name`` (and its children) at info or above.

    Raised only: a process at warning keeps the library at warning (the
    root's handler has no level of its own, so setting info here would add
    the library's info lines to it)."""
    logger = logging.getLogger(name)
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))
