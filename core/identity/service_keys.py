"""The API key of a wac-internal service (the WAPI edge, later the SIP
gateway), kept in one file of the data dir that only wac's user can read.

The file holds the key and a newline, nothing else; it is replaced
atomically (a temporary file created 0600, then renamed over it), so a
reader never sees a half-written key and the key is never readable by
others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# A key is "wac_<16 hex>_<43 base64url>"; anything much longer is not one.
MAX_KEY_FILE = 256


def read_key(path: Path) -> str | None:
    """The key in ``path``, or None when there is no file or it is unreadable."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_KEY_FILE + 1)
    except OSError:
        return None
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return key if key and len(raw) <= MAX_KEY_FILE else None


def write_key(path: Path, key: str) -> None:
    """Replace ``path`` with ``key``, mode 0600, atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    # O_EXCL: never write through a file or symlink someone else placed there.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
