"""A real Janus for tests, started as `wac run` starts it (`wac janus` on
the data dir, its configuration rendered there), on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

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


class JanusSocket:
    """A device's WebSocket to Janus (subprotocol janus-protocol), as the
    SDK speaks it: every request with the token and a transaction; answers
    matched by transaction, everything else kept in ``events``."""

    def __init__(self, socket: Any, token: str) -> None:
        self._socket = socket
        self._token = token
        self._transactions = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session = 0
        self.handle = 0

    async def request(self, message: dict[str, Any], *, token: str | None = None) -> dict[str, Any]:
        """Send ``message``; Janus's answer (its final one: an event after an ack)."""
        transaction = f"t{next(self._transactions)}"
        payload = {**message, "transaction": transaction, "token": self._token if token is None else token}
        if self.session and "session_id" not in payload and message.get("janus") != "create":
            payload["session_id"] = self.session
        await self._socket.send(json.dumps(payload))
        while True:
            answer = await self.receive()
            if answer.get("transaction") != transaction:
                self.events.append(answer)
                continue
            if answer.get("janus") != "ack":
                return answer

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        text = await asyncio.wait_for(self._socket.recv(), seconds() if timeout is None else timeout)
        message: dict[str, Any] = json.loads(text)
        return message

    async def event_with(self, word: str, timeout: float | None = None) -> dict[str, Any]:
        """The first event (kept or next) whose text holds ``word``."""
        for event in self.events:
            if word in json.dumps(event):
                return event
        async with asyncio.timeout(seconds() if timeout is None else timeout):
            while True:
                event = await self.receive()
                self.events.append(event)
                if word in json.dumps(event):
                    return event

    async def open_videoroom(self) -> None:
        created = await self.request({"janus": "create"})
        assert created["janus"] == "success", created
        self.session = created["data"]["id"]
        attached = await self.request({"janus": "attach", "plugin": "janus.plugin.videoroom"})
        assert attached["janus"] == "success", attached
        self.handle = attached["data"]["id"]

    async def videoroom(self, body: dict[str, Any]) -> dict[str, Any]:
        """A VideoRoom request on the handle; the plugin's data."""
        answer = await self.request({"janus": "message", "handle_id": self.handle, "body": body})
        data: dict[str, Any] = answer.get("plugindata", {}).get("data", {})
        if answer.get("janus") == "error":
            return {"error_code": answer["error"]["code"], "error": answer["error"]["reason"]}
        return data


@asynccontextmanager
async def janus_socket(url: str, token: str) -> AsyncIterator[JanusSocket]:
    async with websockets.connect(url, subprotocols=["janus-protocol"]) as socket:  # type: ignore[list-item]
        yield JanusSocket(socket, token)
