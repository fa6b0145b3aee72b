"""Reading a wac-internal service's API key from the data dir.

The core writes each such key (the hop key, the gateway's key) into a file
of the data dir on start (core/identity/service_keys.py); the processes
that present it read it from there, waiting a moment for a core that is
starting beside them. The key is returned, never printed or logged.
"""

from __future__ import annotations

import time
from pathlib import Path

from settings.config import ConfigError

# How often a waiting reader looks for the file the core is about to write.
_POLL_SECONDS = 0.05


def wait_for_key_file(path: Path, wait: float, *, what: str, remedy: str) -> str:
    """The key in ``path``, waiting up to ``wait`` seconds for it to appear.

    ``what`` names the key in errors ("hop key"); ``remedy`` says what
    to do when the file never appears. Raises ConfigError on an unreadable
    file or on timeout. Blocking: call it from a thread in async code.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            key = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the {what} from {path}: {exc}") from None
        if key:
            return key
        if time.monotonic() >= deadline:
            raise ConfigError(f"no {what}: {path} did not appear within {wait:g} s. {remedy}")
        time.sleep(_POLL_SECONDS)
