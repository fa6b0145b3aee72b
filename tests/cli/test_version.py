"""`wac --version`: the installed distribution's version, or a checkout's mark."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from cli import version as version_module
from cli.main import main


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"wac {metadata.version('wac')}\n"


def test_a_checkout_that_was_never_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", missing)
    assert version_module.version() == "0.0.0+checkout"


def test_python_m_cli_prints_it_too() -> None:
    wac = subprocess.run(
        [sys.executable, "-m", "cli", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert wac.stdout.strip() == f"wac {metadata.version('wac')}"
