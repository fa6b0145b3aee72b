"""deploy/grafana/wac.json uses only metrics that a real core and a real
edge expose: every name in every panel's PromQL expression and in the
template variables' queries is read off a live /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import metrics as core_metrics
from core.server import Core
from edges.wapi import metrics as edge_metrics
from edges.wapi.server import start_edge
from tests.metrics.support import exposed
from tests.support.core import add_subscriber
from tests.wapi.conftest import edge_config
from tests.wapi.support import wapi

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "wac.json"

_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _LABEL_MATCHERS.sub(" ", expression)))
    bare = re.sub(r'"[^"]*"', " ", bare)
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        word = match.group(0)
        start = match.start()
        function = bare[match.end() :].lstrip().startswith("(")
        if function or word in _KEYWORDS or (start > 0 and (bare[start - 1].isdigit() or bare[start - 1] == ".")):
            continue
        names.add(word)
    return names


def expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, str) and query.startswith("label_values("):
            yield query[len("label_values(") :].split(",", 1)[0]


def test_the_parser_finds_names_and_skips_the_rest() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{code!="OK"}[5m])))') == {
        "a_bucket"
    }
    assert metric_names("sum(rate(x_total[$__rate_interval])) / sum(y)") == {"x_total", "y"}


async def test_every_metric_of_the_dashboard_is_exposed(core: Core, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expression in expressions(dashboard):
        names = metric_names(expression)
        assert names, f"no metric in {expression!r}"
        used |= names
    assert any(name.startswith("wac_core_") for name in used) and any(name.startswith("wac_edge_") for name in used)

    core_listener = core_metrics.listen("127.0.0.1:0")
    edge_listener = edge_metrics.listen("127.0.0.1:0")
    assert core_listener is not None and edge_listener is not None
    edge = await start_edge(edge_config(tmp_path / "data", core.port))
    try:
        await add_subscriber(core, "alice")
        async with wapi(edge) as alice:
            await alice.login("alice")
        available = await exposed(core_listener.port) | await exposed(edge_listener.port)
    finally:
        await edge.stop()
        core_listener.close()
        edge_listener.close()
    assert sorted(used - available) == []
