"""`wac run`: the supervised embedded default starts, serves and stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.server import free_port
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """Distinct free ports (tests/support/server.py never hands one out twice in a while)."""
    return [free_port() for _ in range(count)]


def test_run_serves_everything_and_stops_cleanly(tmp_path: Path) -> None:
    front, admin, core, edge, edge_http = free_ports(5)
    env = {
        **os.environ,
        "WAC_DATA_DIR": str(tmp_path / "data"),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_ENVOY_ADMIN_PORT": str(admin),
        "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{edge}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{edge_http}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
        # Kamailio, rtpengine and Janus would take their fixed default
        # ports; tests/gateway and tests/janus run them on free ones.
        "WAC_GATEWAY_ENABLED": "false",
        "WAC_CONFERENCES_ENABLED": "false",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "run", "--demo"], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + seconds(6)
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{front}/sapi/v1/subscribers", timeout=1)
                if answer.status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        output = log.read_text(errors="replace")
        assert answer is not None and answer.status_code == 401, output
        assert answer.json()["message"] == "missing credentials: send 'authorization: Bearer <access token or API key>'"
        assert "alice\t" in output and "bob\t" in output, "demo passwords are printed on the first run"
        credentials = (tmp_path / "data" / "demo-credentials.txt").read_text()
        assert credentials.startswith("alice\t")
        assert (tmp_path / "data" / "demo-credentials.txt").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(seconds(4))
    assert code == 0, log.read_text(errors="replace")
    children = subprocess.run(["pgrep", "-f", str(tmp_path / "data")], check=False, capture_output=True, text=True)
    assert children.stdout == "", "no child outlives wac run"


def test_a_child_that_refuses_its_configuration_stops_everything(tmp_path: Path) -> None:
    front, core, edge, edge_http = free_ports(4)
    env = {
        **os.environ,
        # Envoy's admin socket in it would be longer than a unix socket
        # allows: refused by `wac envoy` alone, after the others started.
        "WAC_DATA_DIR": str(tmp_path / ("d" * 100)),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{edge}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{edge_http}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
        # Kamailio, rtpengine and Janus would take their fixed default
        # ports; tests/gateway and tests/janus run them on free ones.
        "WAC_GATEWAY_ENABLED": "false",
        "WAC_CONFERENCES_ENABLED": "false",
    }
    result = wac_run(env)
    assert result.returncode == 1
    assert "longer than a unix socket allows" in result.stderr
    assert "envoy refused its configuration" in result.stderr


def test_a_value_the_configuration_refuses_stops_wac_run_before_any_child(tmp_path: Path) -> None:
    env = {**os.environ, "WAC_DATA_DIR": str(tmp_path / "data"), "WAC_ENVOY_LOG_LEVEL": "shouting"}
    result = wac_run(env)
    assert result.returncode == 78
    assert "WAC_ENVOY_LOG_LEVEL: must be one of trace, debug, info, warning" in result.stderr


def wac_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`wac run` that is expected to give up within seconds: its exit and output."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(6),
        cwd=ROOT,
        check=False,
    )
