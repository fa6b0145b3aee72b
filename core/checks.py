"""Checks of request fields that every service makes the same way.

They raise ``core.failures.Invalid`` naming the field, so rules and
handlers can use them without knowing gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.failures import Invalid


def require(field: str, value: object) -> None:
    """A REQUIRED field must be set."""
    if value in ("", None, 0) or (isinstance(value, Sequence) and not isinstance(value, str) and not value):
        raise Invalid(field, "is required")


def max_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise Invalid(field, f"is {len(value)} characters long; at most {limit} are allowed")
