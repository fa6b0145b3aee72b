"""The hop key in the front door's configuration and where hops find it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cli import envoy
from settings.config import ConfigError
from settings.hopkey import hop_key_path, read_hop_key
from tests.support.core import test_config as config_for

KEY = "wac_0123456789abcdef_s3cret-value"


def test_the_hop_key_is_rendered_and_a_clients_own_is_removed(tmp_path: Path, envoy_path: str) -> None:
    text = envoy.render_config(hop_key=KEY)
    assert f'- header: {{ key: x-wac-hop, value: "{KEY}" }}' in text
    assert "request_headers_to_remove: [x-wac-hop," in text
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    envoy.validate_config(path)


def test_without_a_hop_key_envoy_still_starts(tmp_path: Path, envoy_path: str) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy.render_config())
    envoy.validate_config(path)


def test_the_configured_key_wins(tmp_path: Path) -> None:
    config = config_for(tmp_path, {"WAC_CORE_HOP_KEY": KEY})
    assert read_hop_key(config, wait=0) == KEY


def test_the_key_the_core_writes_is_waited_for(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    writer = threading.Timer(0.2, lambda: hop_key_path(config).write_text(KEY + "\n"))
    writer.start()
    try:
        assert read_hop_key(config, wait=5) == KEY
    finally:
        writer.cancel()


def test_no_key_in_time_fails_clearly(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"hop.key did not appear within 0.2 s.*\[core\] hop_key"):
        read_hop_key(config, wait=0.2)
    assert time.monotonic() - started < 2
