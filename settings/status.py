"""The status files ``wac status`` reads: each long-running wac process
(the supervisor of ``wac run``, the core, the edge) keeps a small JSON
document about itself in the data dir, rewritten whole (a temporary file
renamed over the old one, so a reader never sees half of one) and private
to wac's user like every file there.

A file's ``time`` says when it was written: a process that stopped leaves
its last one behind, which ``wac status`` tells apart by the age and the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

# Seconds between rewrites of the core's and the edge's files.
INTERVAL = 2.0


def path(data_dir: Path, name: str) -> Path:
    """Where the status of ``name`` (run, core, edge) lives."""
    return data_dir / f"{name}.status.json"


def write(data_dir: Path, name: str, document: dict[str, Any]) -> None:
    """Replace the status of ``name`` with ``document``."""
    target = path(data_dir, name)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)
    os.replace(temporary, target)


def read(data_dir: Path, name: str) -> dict[str, Any] | None:
    """The status of ``name``, or None if there is none (or it is unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(path(data_dir, name).read_text())
        if isinstance(document, dict):
            return document
    return None


def alive(pid: object) -> bool:
    """Whether a process with this pid exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
