"""The wheel, installed with no checkout: `python -m build` makes it (and the
sdist it is built from), a fresh virtual environment installs it with its
dependencies from the registry, and its `wac run --demo`, started from an
empty directory with no PYTHONPATH, serves the front door: the demo, the SDK,
a login over WAPI and a SAPI verify of the token.

One module-scoped installation serves every test; it takes about half a
minute with pip's cache warm (as after `make setup`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from tests.support.cli import ROOT, stop
from tests.support.server import free_port
from tests.support.system import missing
from tests.support.timing import seconds

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What `make setup` builds and the wheel must carry (pyproject.toml's
# force-include), besides the Python files.
SDK = ROOT / "clients" / "js" / "dist" / "wac.js"

pytestmark = pytest.mark.timeout(900)


@dataclass
class Installed:
    venv: Path
    wheel: Path
    sdist: Path
    cwd: Path

    @property
    def wac(self) -> Path:
        return self.venv / "bin" / "wac"

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment less anything that could lead back to
        the checkout (PYTHONPATH, its venv, a caller's WAC_* settings)."""
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not name.startswith("WAC_")
        }
        return {**env, **extra}

    def run(self, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.wac), *args], env=env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if not SDK.is_file():
        missing("the JS SDK is not built (make setup builds it)")
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    try:
        build = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
        (wheel,) = dist.glob("wac-*.whl")
        (sdist,) = dist.glob("wac-*.tar.gz")
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        # constraints.txt: the versions the checkout is tested with.
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert pip.returncode == 0, pip.stdout[-4000:] + pip.stderr[-4000:]
        cwd = work / "elsewhere"
        cwd.mkdir()
        yield Installed(venv, wheel, sdist, cwd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_wheel_carries_stubs_data_files_and_migrations(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {
        "wac/v1/identity_pb2.py",
        "wac/v1/identity_pb2_grpc.py",
        "wac/internal/v1/stream_pb2.py",
        "wac/share/build/wac.pb",
        "wac/share/envoy/envoy.yaml.tmpl",
        "wac/share/envoy/openapi.json",
        "wac/share/gateway/kamailio.cfg.tmpl",
        "wac/share/clients/js/dist/wac.js",
        "wac/share/clients/js/dist/wac.umd.js",
        "wac/share/clients/js/demo/index.html",
        "wac/share/clients/js/demo/app.js",
        "core/db/migrations/env.py",
        "core/db/migrations/script.py.mako",
        "core/db/migrations/versions/0001_initial_schema.py",
    }
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith(("tests/", "bench/", "clients/js/dist/test")) for name in names)


def test_the_sdist_carries_what_make_setup_generates(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"wac/v1/identity_pb2.py", "build/wac.pb", "clients/js/dist/wac.js", "proto/wac/v1/identity.proto"} <= names
    assert not any(name.startswith(("clients/js/node_modules/", ".venv/")) for name in names)


def test_wac_version_is_the_packages(installed: Installed) -> None:
    result = installed.run("--version", env=installed.env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wac {VERSION}"


def test_the_installed_code_and_data_come_from_the_venv(installed: Installed) -> None:
    python = installed.venv / "bin" / "python"
    probe = "import cli, settings.assets as a; print(cli.__file__); print(a.root())"
    result = subprocess.run(
        [str(python), "-c", probe], env=installed.env(), cwd=installed.cwd, capture_output=True, text=True, check=True
    )
    module, root = result.stdout.split()
    site = Path(root).parent.parent
    assert Path(module).is_relative_to(installed.venv) and site.is_relative_to(installed.venv), result.stdout
    assert not Path(module).is_relative_to(ROOT)


def test_wac_run_demo_serves_the_front_door(installed: Installed) -> None:
    data = installed.cwd / "data"
    front, core = free_port(), free_port()
    env = installed.env(
        WAC_DATA_DIR=str(data),
        WAC_ENVOY_LISTEN=f"127.0.0.1:{front}",
        WAC_CORE_LISTEN=f"127.0.0.1:{core}",
        WAC_EDGE_LISTEN=f"127.0.0.1:{free_port()}",
        WAC_EDGE_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        WAC_EDGE_CORE_ADDRESS=f"127.0.0.1:{core}",
        # Kamailio, rtpengine and Janus would take their fixed default ports.
        WAC_GATEWAY_ENABLED="false",
        WAC_CONFERENCES_ENABLED="false",
    )
    log = installed.cwd / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed.wac), "run", "--demo"],
            env=env,
            cwd=installed.cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{front}"
    try:
        deadline = time.monotonic() + seconds(12)
        while not _answers(f"{base}/sapi/v1/subscribers"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "wac run did not serve in time\n" + log.read_text(errors="replace")
            time.sleep(0.1)

        assert "<html" in httpx.get(f"{base}/", timeout=5).text.lower()
        sdk = httpx.get(f"{base}/sdk/wac.js", timeout=5)
        assert sdk.status_code == 200 and len(sdk.content) > 1000

        passwords = dict(line.split("\t") for line in (data / "demo-credentials.txt").read_text().splitlines() if line)
        with websockets.sync.client.connect(f"ws://127.0.0.1:{front}/wapi", open_timeout=seconds(2)) as ws:
            login = {"username": "alice", "password": passwords["alice"], "deviceName": "smoke"}
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "IdentityService.Login", "params": login}))
            answer = json.loads(ws.recv(timeout=seconds(2)))
        token = answer["result"]["accessToken"]

        created = installed.run("admin", "apikey", "create", "smoke", "--scope", "identity.verify", env=env)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        verified = httpx.post(
            f"{base}/sapi/v1/identity:verify",
            headers={"Authorization": f"Bearer {key}"},
            json={"token": token},
            timeout=5,
        )
        assert verified.status_code == 200, verified.text
        body = verified.json()
        assert body["active"] is True and body["subscriber"]["username"] == "alice", body
    finally:
        stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 401
    except httpx.HTTPError:
        return False
