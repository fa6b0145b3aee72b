"""Starting a real `wac run` from tests, its whole output in one file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.cli import ROOT


def start_run(env: Mapping[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``wac run ARGS`` in the background, its stdout and stderr (and so
    every child's, which inherit them) appended to ``log``; stop it with
    tests.support.cli.stop.

    In a session of its own, so that ``stop`` can kill its whole process
    group and a hangup sent to the group reaches every child."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "run", *args],
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
