"""settings.assets: one relative path names a data file in a checkout and in a wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import envoy, gateway
from edges.wapi import server
from settings import assets

CHECKOUT = Path(__file__).resolve().parents[2]


def test_a_checkout_reads_its_own_files() -> None:
    assert not assets.INSTALLED.exists(), "wac/share/ is a wheel's; a checkout never makes it"
    assert assets.root() == CHECKOUT
    assert envoy.TEMPLATE == CHECKOUT / "envoy" / "envoy.yaml.tmpl"
    assert envoy.DEFAULT_DESCRIPTOR == CHECKOUT / "build" / "wac.pb"
    assert envoy.DEFAULT_OPENAPI == CHECKOUT / "envoy" / "openapi.json"
    assert gateway.TEMPLATE == CHECKOUT / "gateway" / "kamailio.cfg.tmpl"
    assert server.DEFAULT_SDK_DIR == CHECKOUT / "clients" / "js" / "dist"
    assert server.DEFAULT_DEMO_DIR == CHECKOUT / "clients" / "js" / "demo"
    for path in (envoy.TEMPLATE, envoy.DEFAULT_OPENAPI, gateway.TEMPLATE, server.DEFAULT_DEMO_DIR / "index.html"):
        assert path.is_file(), path


def test_an_installed_wheel_reads_wac_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = tmp_path / "wac" / "share"
    (share / "envoy").mkdir(parents=True)
    monkeypatch.setattr(assets, "INSTALLED", share)
    assert assets.asset("envoy", "envoy.yaml.tmpl") == share / "envoy" / "envoy.yaml.tmpl"
