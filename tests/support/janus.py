"""A real Janus for tests, started as `wac run` starts it (`wac janus` on
the data dir, its configuration rendered there), on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cli import janus
from settings.config import Config, load_config
from tests.support.cli import ROOT, cli_env
from tests.support.server import free_port
from tests.support.system import missing
from tests.support.timing import seconds


def require_janus() -> None:
    absent = janus.missing_programs()
    if absent:
        missing(f"{' and '.join(absent)} not installed (deps/debian.txt: sudo make system-deps)")


@dataclass(frozen=True)
class RunningJanus:
    config: Config  # as `wac janus` read it: its data dir, listeners and secret
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_listen(self) -> str:
        return self.config.conferences.janus_ws_listen

    @property
    def api_url(self) -> str:
        return f"http://{self.config.conferences.janus_api_listen}/janus"


def janus_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a `wac janus` (and of a core that uses it) on free ports."""
    low = 45000 + (free_port() % 100) * 100
    return cli_env(
        data_dir,
        {
            "WAC_CONFERENCES_ENABLED": "true",
            "WAC_CONFERENCES_JANUS_WS_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_CONFERENCES_JANUS_API_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_CONFERENCES_RTP_PORT_MIN": str(low),
            "WAC_CONFERENCES_RTP_PORT_MAX": str(low + 99),
            **(extra or {}),
        },
    )


def start_janus(data_dir: Path, env: Mapping[str, str] | None = None) -> RunningJanus:
    """`wac janus` on ``data_dir``, once it answers; a failure to start shows its log."""
    full = janus_env(data_dir, env)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = data_dir / "janus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "janus"], env=full, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
    config = load_config(env=full)
    try:
        janus.wait_until_live(config.conferences.janus_api_listen, seconds(10), process)
    except janus.JanusError as error:
        stop_janus(process)
        raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
    return RunningJanus(config, process, log)


def stop_janus(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds(5))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def running_janus(data_dir: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[RunningJanus]:
    """`wac janus` on ``data_dir`` until the block ends."""
    require_janus()
    running = await asyncio.to_thread(start_janus, data_dir, env)
    try:
        yield running
    finally:
        await asyncio.to_thread(stop_janus, running.process)
