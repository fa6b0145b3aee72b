"""deploy/'s systemd units, checked by systemd's own tools: `systemd-analyze
verify` (syntax, directives, the command), `systemd-analyze security` (the
hardening's exposure score) and `systemd-sysusers` (the dedicated user).

Where systemd is missing they are skipped, except under CI=true, where .ci/run
installs it and they must run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import ROOT
from tests.support.system import missing

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "wac.service"
SYSUSERS = DEPLOY / "wac.sysusers.conf"
# Where deploy/README.md installs the wheel.
EXEC_START = "/opt/wac/bin/wac run"
# systemd-analyze security's scale runs from 0 (locked down) to 10; 2 and
# below it calls "OK".
MAX_EXPOSURE = 2.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is missing (Debian's systemd package has it)")
    return found


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """deploy/wac.service with ExecStart at this environment's wac: verify
    checks that the command exists."""
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}\n" in text
    here = Path(sys.executable).parent / "wac"
    copy = tmp_path / "wac.service"
    copy.write_text(text.replace(f"ExecStart={EXEC_START}", f"ExecStart={here} run"))
    return copy


def test_the_unit_runs_wac_as_its_own_user_with_the_usual_hardening() -> None:
    directives = _directives(UNIT.read_text())
    expected = {
        "User": "wac",
        "Group": "wac",
        "StateDirectory": "wac",
        "StateDirectoryMode": "0700",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "Environment": "WAC_DATA_DIR=/var/lib/wac",
    }
    for key, value in expected.items():
        assert directives.get(key) == [value], f"{key}: {directives.get(key)}"


def test_systemd_analyze_verify_accepts_the_unit(unit: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False, cwd=unit.parent
    )
    # An unknown or misspelt directive is only a warning: any output fails.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_the_hardening_scores_ok(unit: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=unit.parent,
    )
    score = re.search(r"Overall exposure level for wac\.service: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, result.stdout


def test_sysusers_creates_the_wac_user(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    entry = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith("wac:"))
    home, shell = entry.split(":")[5:]
    assert home == "/var/lib/wac" and shell.endswith("/nologin"), entry
