"""The data directory holds the private signing keys: it is 0700 with 0600
files, refused when other users may enter it, and the configuration file
that names it fails cleanly when it is not UTF-8."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from settings.config import ConfigError, load_config
from tests.support.cli import cli_env
from tests.support.cli import wac as run_wac

EX_CONFIG = 78


def wac(*args: str, data_dir: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_wac(*args, env=cli_env(data_dir, extra))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["core"],
        ["edge"],
        ["envoy"],
        ["migrate"],
        ["admin", "subscriber", "list"],
        ["connectors", "list"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_data_dir_open_to_other_users_is_refused(tmp_path: Path, command: list[str]) -> None:
    assert_refused(tmp_path, command, 0o755)


@pytest.mark.parametrize("open_mode", [0o750, 0o710, 0o702, 0o701])
def test_any_access_by_group_or_others_is_refused(tmp_path: Path, open_mode: int) -> None:
    assert_refused(tmp_path, ["core"], open_mode)


def assert_refused(tmp_path: Path, command: list[str], open_mode: int) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(open_mode)
    result = wac(*command, data_dir=data)
    assert result.returncode == EX_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(data) in lines[0] and f"chmod 700 {data}" in lines[0], lines[0]
    assert f"{open_mode:04o}" in lines[0]
    # Nothing was written in it: no database beside the keys' future home.
    assert list(data.iterdir()) == []


def test_a_fresh_data_dir_is_created_0700_with_0600_files(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    result = wac("admin", "subscriber", "add", "alice", "--password", "alice-secret", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    files = [entry for entry in data.iterdir() if entry.is_file()]
    assert any(entry.name == "wac.sqlite3" for entry in files), files
    for entry in files:
        assert mode(entry) == 0o600, f"{entry.name} is {mode(entry):04o}"


def test_files_left_readable_by_an_older_wac_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    data.chmod(0o700)
    old = data / "envoy.yaml"
    old.write_text("# rendered by an older wac\n")
    old.chmod(0o644)
    result = wac("migrate", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert mode(old) == 0o600
    assert mode(data / "wac.sqlite3") == 0o600


def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_offset(tmp_path: Path) -> None:
    config = tmp_path / "wac.toml"
    text = b'data_dir = "var"\n[core]\nlisten = "\xff\xfe"\n'
    config.write_bytes(text)
    offset = text.index(b"\xff")
    with pytest.raises(ConfigError) as err:
        load_config(config, {})
    message = f"config file {config} is not valid UTF-8 (byte offset {offset})"
    assert str(err.value) == message

    for command in (["core"], ["run"]):
        result = wac("--config", str(config), *command, data_dir=tmp_path / "data")
        assert result.returncode == EX_CONFIG, result.stderr
        assert result.stderr == f"wac: configuration error: {message}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, 65534, 65534)
    result = wac("core", data_dir=data)
    assert result.returncode == EX_CONFIG, result.stderr
    assert result.stderr.strip() == (
        f"wac: configuration error: data dir {data} belongs to uid 65534, not to this user (uid 0): "
        "run wac as its owner, or chown it"
    )
