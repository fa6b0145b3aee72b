"""`wac run` tells its children that a gateway it left out is disabled, so
that the core does not announce at login a gateway that is not running."""

from __future__ import annotations

from cli.main import children_env
from settings.config import load_config

ALL = ["core", "edge", "envoy", "rtpengine", "gateway"]
WITHOUT_GATEWAY = ["core", "edge", "envoy"]


def test_a_gateway_left_out_is_disabled_for_the_children() -> None:
    config = load_config(None, {"WAC_GATEWAY_ENABLED": "true"})
    env = children_env(config, WITHOUT_GATEWAY)
    assert env == {"WAC_GATEWAY_ENABLED": "false"}
    assert not load_config(None, env).gateway.enabled


def test_a_running_or_disabled_gateway_changes_nothing() -> None:
    assert children_env(load_config(None, {"WAC_GATEWAY_ENABLED": "true"}), ALL) == {}
    assert children_env(load_config(None, {"WAC_GATEWAY_ENABLED": "false"}), WITHOUT_GATEWAY) == {}
