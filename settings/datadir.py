"""The data directory: private to wac's user, and owned by one core at a time.

It holds the SQLite database with the private signing keys in it, the
rendered Envoy configuration, the demo credentials and Envoy's admin socket:
another local user who can read it can mint tokens. So the directory is
created 0700, every file wac writes in it is 0600 (the umask set here is
inherited by every wac process and by Envoy), and a directory that group or
others may read, write or enter is refused rather than silently used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import IO

from settings.config import ConfigError

# Group and others get nothing on anything a wac process creates.
PRIVATE_UMASK = 0o077

# Held by `wac core` for its whole life, and by `wac run` (the supervisor)
# for its own: two files, because the supervisor's core child takes the
# core's lock and flock(2) locks of one process tree still conflict.
CORE_LOCK = "core.lock"
RUN_LOCK = "run.lock"


class DataDirError(ConfigError):
    """The data directory is unsafe, unusable or already in use."""


def private_umask() -> None:
    """Make every file and directory this process (and its children) creates private."""
    os.umask(PRIVATE_UMASK)


def prepare(data_dir: Path) -> None:
    """Create data_dir 0700 if missing; refuse it if group or others have any access.

    Files an older wac left readable (0644) inside a private directory are
    tightened to 0600: they were never reachable through the directory, but
    a later chmod of the directory should not expose them.
    """
    try:
        # Only the last component is ours to create private; parents are
        # ordinary directories (umask decides, 0700 under wac's own).
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            data_dir.mkdir(mode=0o700)
        info = data_dir.stat()
    except OSError as exc:
        raise DataDirError(f"data dir {data_dir}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise DataDirError(f"data dir {data_dir} is not a directory")
    if info.st_uid != os.geteuid():
        # Files made here would belong to the wrong user (a `sudo wac admin`
        # leaves a database the service can no longer open), or to one who
        # can read the keys anyway.
        raise DataDirError(
            f"data dir {data_dir} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): "
            f"run wac as its owner, or chown it"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise DataDirError(
            f"data dir {data_dir} is open to other users (mode {mode:04o}); it holds the signing keys: "
            f"run chmod 700 {data_dir}"
        )
    tighten_files(data_dir)


def tighten_files(data_dir: Path) -> None:
    """Take group and other bits off wac's own files in data_dir (0644 -> 0600).

    Files older wac versions wrote (the database, envoy.yaml) were 0644; a
    process whose umask was not wac's (a test, an embedding) writes the same.
    SQLite gives a new -wal and -shm the database file's own mode, so the
    database only needs this once.
    """
    try:
        entries = list(data_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            info = entry.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077:
                entry.chmod(stat.S_IMODE(info.st_mode) & 0o700)


def lock(data_dir: Path, name: str, *, what: str) -> IO[bytes]:
    """Take the exclusive lock ``name`` in data_dir, or raise DataDirError at once.

    Keep the returned file open for as long as the lock must hold; the
    kernel releases it when the process ends, however it ends (kill -9
    included), so a stale lock file never blocks a restart.
    """
    path = data_dir / name
    handle = path.open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(32).decode(errors="replace").strip()
        handle.close()
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise DataDirError(f"another {what} is already running on data dir {data_dir}{by}") from None
    except OSError as exc:
        handle.close()
        raise DataDirError(f"cannot lock {path}: {exc.strerror or exc}") from None
    # The pid is only for the message above; the lock itself is the flock.
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle
