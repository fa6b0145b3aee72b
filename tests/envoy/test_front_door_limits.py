"""The front door's own bounds: connections below its file-descriptor limit,
new WebSockets per client address, and an admin interface that only wac's
user reaches."""

from __future__ import annotations

import re
import resource
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli import envoy
from tests.support.server import free_port
from tests.support.stack import require_envoy
from tests.support.timing import seconds

ROOT = Path(__file__).resolve().parents[2]
UPGRADE = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13"}


def ceiling(text: str) -> int:
    found = re.search(r"max_active_downstream_connections: (\d+)", text)
    assert found, "the overload manager has no connection ceiling"
    return int(found.group(1))


def test_the_connection_ceiling_is_below_the_descriptor_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = ceiling(envoy.render_config())
    # Each client may hold a second descriptor (towards the edge), and
    # Envoy needs some for itself.
    assert 2 * limit + envoy.FD_RESERVE <= soft or limit == envoy.MIN_CONNECTIONS
    assert limit <= envoy.MAX_CONNECTIONS


def test_a_low_descriptor_limit_lowers_the_ceiling() -> None:
    # In a child, so that this process keeps its own limit.
    script = (
        "import resource; from cli import envoy; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
        "print(envoy.render_config(max_connections=50000))"
    )
    text = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds()
    ).stdout
    assert ceiling(text) == (1024 - envoy.FD_RESERVE) // 2


def test_wac_envoy_raises_its_soft_descriptor_limit_to_the_hard_one() -> None:
    # The child sets its own limits (lowering the hard one is always allowed),
    # so the test means the same on every machine.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
    script = (
        "import resource; from cli import envoy; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({hard // 2}, {hard})); "
        "print(envoy.raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds()
    ).stdout.split()
    assert out == [str(hard), str(hard)]


@pytest.fixture
def limited_front_door(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real Envoy allowing 5 upgrades per address a minute, its admin on a
    unix socket; nothing upstream (requests that pass answer 503)."""
    require_envoy()
    listen = free_port()
    admin = tmp_path / "admin.sock"
    config = tmp_path / "envoy.yaml"
    nowhere = f"127.0.0.1:{free_port()}"
    config.write_text(
        envoy.render_config(
            listen_port=listen,
            core_address=nowhere,
            edge_address=nowhere,
            edge_http_address=nowhere,
            admin_socket=admin,
            upgrades_per_address=5,
        )
    )
    log = tmp_path / "envoy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            envoy.envoy_command(config, log_level="warning", concurrency=1), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        try:
            envoy.wait_until_live(process, admin, timeout=seconds(6))
        except envoy.EnvoyError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from error
        yield listen, admin
    finally:
        envoy.stop_envoy(process, grace=seconds())


def test_upgrades_past_the_per_address_allowance_meet_429(limited_front_door: tuple[int, Path]) -> None:
    port, _admin = limited_front_door
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=seconds()) as client:
        # A bounded flood from one address: 5 pass (to an edge that is down),
        # the rest are refused at the door with the SAPI's error shape.
        answers = [client.get("/wapi", headers=UPGRADE) for _ in range(12)]
        codes = [answer.status_code for answer in answers]
        assert codes[:5] == [503] * 5, codes
        assert codes[5:] == [429] * 7, codes
        assert answers[-1].json()["code"] == 8
        # Requests that are not upgrades (long polls, SAPI, the SDK) are not counted.
        assert {client.get("/wapi/http/events").status_code for _ in range(10)} == {503}


def test_the_admin_socket_is_0600(limited_front_door: tuple[int, Path]) -> None:
    _port, admin = limited_front_door
    info = admin.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert envoy.admin_state(admin) == "LIVE"


def test_a_unix_socket_path_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than a unix socket allows"):
        envoy.render_config(admin_socket="/tmp/" + "d" * 120 + "/envoy-admin.sock")


def test_envoys_statistics_for_prometheus_are_on_the_admin_socket(limited_front_door: tuple[int, Path]) -> None:
    """Where README (Metrics) and `wac run` send Prometheus for Envoy's own statistics."""
    _port, admin = limited_front_door
    status, body = envoy.admin_request(admin, "/stats/prometheus", timeout=seconds())
    assert status == 200
    assert "# TYPE envoy_server_live gauge" in body
    assert "envoy_http_downstream_rq_total{" in body
