"""The configuration file, its environment overrides and its errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from wac.config import SECTIONS, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "wac.example.toml"


def test_the_example_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    defaults = load_config(None, {})
    for name, cls in SECTIONS.items():
        documented = raw.get(name, {})
        for field in dataclasses.fields(cls):
            assert field.name in documented, f"[{name}] {field.name} is missing from wac.example.toml"
            value = getattr(getattr(defaults, name), field.name)
            expected = list(value) if isinstance(value, tuple) else value
            assert documented[field.name] == expected, f"[{name}] {field.name}: example differs from the default"
    assert load_config(EXAMPLE, {}) == defaults


def test_environment_overrides_every_kind_of_value(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "WAC_DATA_DIR": str(tmp_path),
            "WAC_CORE_LISTEN": "127.0.0.1:1234",
            "WAC_CALLS_BUSY_ON_BUSY": "yes",
            "WAC_CALLS_RING_TIMEOUT": "5",
            "WAC_ICE_STUN_URLS": "stun:a.example:3478, stun:b.example:3478",
        },
    )
    assert config.data_dir == tmp_path
    assert config.core.listen == "127.0.0.1:1234"
    assert config.calls.busy_on_busy is True
    assert config.calls.ring_timeout == 5.0
    assert config.ice.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")
    assert config.database_url.endswith(f"{tmp_path}/wac.sqlite3")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[core]\nlisen = 'x'\n", {}, "[core] unknown key(s): lisen"),
        ("[cores]\n", {}, "unknown top-level key(s): cores"),
        ("[calls]\nring_timeout = 'soon'\n", {}, "[calls] ring_timeout: expected a number"),
        ("", {"WAC_CALLS_BUSY_ON_BUSY": "maybe"}, "WAC_CALLS_BUSY_ON_BUSY: expected true or false"),
        ("[presence]\nvisibility = 'world'\n", {}, "visibility: must be 'contacts' or 'domain'"),
        ("[roles.x]\npermissions = 'call.audio'\n", {}, "[roles.x] permissions: expected a list of strings"),
        ("not toml [", {}, "is not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "wac.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert message in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", {})
