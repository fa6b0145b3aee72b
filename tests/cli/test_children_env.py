"""`wac run` tells its children that a gateway or a Janus it left out is
disabled, so that the core neither announces at login a gateway that is not
running nor offers conferences without their media server; and it runs
Janus when conferences are on and Janus is installed."""

from __future__ import annotations

import pytest

from cli import janus
from cli.main import available_roles, children_env
from settings.config import load_config
from tests.support.janus import require_janus

ALL = ["core", "edge", "envoy", "rtpengine", "gateway", "janus"]
WITHOUT_GATEWAY = ["core", "edge", "envoy", "janus"]
WITHOUT_JANUS = ["core", "edge", "envoy", "rtpengine", "gateway"]


def test_a_gateway_left_out_is_disabled_for_the_children() -> None:
    config = load_config(None, {"WAC_GATEWAY_ENABLED": "true"})
    env = children_env(config, WITHOUT_GATEWAY)
    assert env == {"WAC_GATEWAY_ENABLED": "false"}
    assert not load_config(None, env).gateway.enabled


def test_a_janus_left_out_turns_conferences_off_for_the_children() -> None:
    config = load_config(None, {"WAC_CONFERENCES_ENABLED": "true"})
    env = children_env(config, WITHOUT_JANUS)
    assert env == {"WAC_CONFERENCES_ENABLED": "false"}
    assert not load_config(None, env).conferences.enabled


def test_running_or_disabled_parts_change_nothing() -> None:
    assert children_env(load_config(None, {"WAC_GATEWAY_ENABLED": "true"}), ALL) == {}
    off = {"WAC_GATEWAY_ENABLED": "false", "WAC_CONFERENCES_ENABLED": "false"}
    assert children_env(load_config(None, off), ["core", "edge", "envoy"]) == {}


def test_wac_run_runs_janus_when_conferences_are_on_and_it_is_installed() -> None:
    require_janus()
    roles = available_roles(load_config(None, {"WAC_GATEWAY_ENABLED": "false"}))
    assert roles == ["core", "edge", "envoy", "janus"]
    off = {"WAC_GATEWAY_ENABLED": "false", "WAC_CONFERENCES_ENABLED": "false"}
    assert available_roles(load_config(None, off)) == ["core", "edge", "envoy"]


def test_without_janus_wac_run_says_why_conferences_are_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As on a machine without the package: what wac run prints, and runs.
    monkeypatch.setattr(janus, "janus_binary", lambda: None)
    roles = available_roles(load_config(None, {"WAC_GATEWAY_ENABLED": "false"}))
    assert roles == ["core", "edge", "envoy"]
    said = capsys.readouterr().err
    assert "running without conferences: janus not installed" in said
    assert "sudo make system-deps" in said and "[conferences] enabled = false" in said
