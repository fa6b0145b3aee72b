"""Where the metrics are: what `wac run` prints, and `wac cluster`'s ports."""

from __future__ import annotations

from pathlib import Path

from cli import cluster
from cli.main import metrics_addresses
from settings.config import load_config


def test_wac_run_names_every_metrics_address(tmp_path: Path) -> None:
    config = load_config(None, {"WAC_DATA_DIR": str(tmp_path)})
    assert metrics_addresses(config) == [
        "core http://127.0.0.1:9464/metrics",
        "edge http://127.0.0.1:9465/metrics",
        f"envoy curl --unix-socket {tmp_path / 'envoy-admin.sock'} http://localhost/stats/prometheus",
    ]
    config = load_config(
        None, {"WAC_DATA_DIR": str(tmp_path), "WAC_EDGE_METRICS_LISTEN": "", "WAC_ENVOY_ADMIN_PORT": "9901"}
    )
    assert metrics_addresses(config) == [
        "core http://127.0.0.1:9464/metrics",
        "envoy http://127.0.0.1:9901/stats/prometheus",
    ]


def test_a_clusters_nodes_get_ports_of_their_own(tmp_path: Path) -> None:
    config = load_config(None, {"WAC_DATA_DIR": str(tmp_path)})
    planned = cluster.plan(config, cores=2, edges=2, hop_port=None)
    cores = [node.env["WAC_CORE_METRICS_LISTEN"] for node in planned.cores]
    edges = [node.env["WAC_EDGE_METRICS_LISTEN"] for node in planned.edges]
    assert cores == ["127.0.0.1:9464", "127.0.0.1:9466"]
    assert edges == ["127.0.0.1:9465", "127.0.0.1:9467"]
    assert {address for address, _ in planned.addresses()} >= {*cores, *edges}
