"""The real `wac` command, run as an operator runs it, from tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.passwords import TEST_ARGON2
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]


def cli_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment on ``data_dir``, without a caller's WAC_CONFIG
    unless ``extra`` names one."""
    # The gateway and conferences are off: under `wac run` Kamailio,
    # rtpengine and Janus would take their fixed default ports (tests/gateway
    # and tests/janus run them on free ones).
    env = {
        **os.environ,
        "WAC_DATA_DIR": str(data_dir),
        "WAC_GATEWAY_ENABLED": "false",
        "WAC_CONFERENCES_ENABLED": "false",
        **TEST_ARGON2,
    }
    env.pop("WAC_CONFIG", None)
    return {**env, **(extra or {})}


def wac(*args: str, env: Mapping[str, str], timeout: float = 4) -> subprocess.CompletedProcess[str]:
    """``wac ARGS`` to completion; the caller checks the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(timeout),
        check=False,
    )


async def wac_async(*args: str, env: Mapping[str, str], timeout: float = 6) -> subprocess.CompletedProcess[str]:
    """``wac ARGS`` without blocking the event loop (a core in this process
    keeps serving the command)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        env=dict(env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), seconds(timeout))
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def stop(process: subprocess.Popen[bytes], grace: float | None = None) -> None:
    """Stop ``wac run`` (or ``wac cluster``) as an operator does, with ^C;
    past ``grace`` seconds (default ``seconds(4)``), kill its whole process
    group. Nothing if it has exited already."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(seconds(4) if grace is None else grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
