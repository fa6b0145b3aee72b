"""AIP-158 pagination: page sizes and opaque page tokens, one way for all."""

from __future__ import annotations

import base64
import json
from typing import Any

from core.failures import Invalid

# Every token this module encodes is far shorter (the longest, a directory
# search position, holds a fingerprint and a 255-character name); anything
# longer is refused before it is decoded, so a forged token costs no more
# than a real one.
MAX_TOKEN_CHARS = 2048


def page_size(requested: int, *, default: int = 100, maximum: int = 1000) -> int:
    """0 means the default; a size above the maximum is clamped."""
    if requested < 0:
        raise Invalid("page_size", "must not be negative")
    return min(requested or default, maximum)


def encode_token(position: Any) -> str:
    """An opaque token for the next page, from a JSON-able position."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Any:
    """The position a token encodes; None for the first page."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise invalid_token()
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    # RecursionError: even within the size bound, JSON nested a thousand
    # levels deep exhausts the decoder's recursion limit.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_token() from None


def invalid_token() -> Invalid:
    """What a token that this module or its caller cannot read raises."""
    return Invalid("page_token", "is not a page token this method returned")
