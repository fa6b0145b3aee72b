"""deploy/grafana/wac.json uses only metrics that a real core, a real edge
and a real Envoy expose: every name in every panel's PromQL expression and
in the template variables' queries is read off a live /metrics (Envoy's
/stats/prometheus)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from core import metrics as core_metrics
from edges.wapi import metrics as edge_metrics
from tests.metrics.support import exposed, exposed_as_written
from tests.support.core import add_subscriber
from tests.support.stack import running_stack
from tests.support.timing import seconds
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


def used_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expression in expressions(dashboard):
        names = metric_names(expression)
        assert names, f"no metric in {expression!r}"
        used |= names
    return used


async def test_every_metric_of_the_dashboard_is_exposed(tmp_path: Path) -> None:
    used = used_metrics()
    for prefix in ("wac_core_", "wac_edge_", "envoy_"):
        assert any(name.startswith(prefix) for name in used), f"no {prefix}* panel"

    core_listener = core_metrics.listen("127.0.0.1:0")
    edge_listener = edge_metrics.listen("127.0.0.1:0")
    assert core_listener is not None and edge_listener is not None
    try:
        async with running_stack(tmp_path / "data") as stack:
            await add_subscriber(stack.core, "alice")
            # A WAPI login through the front door: the edge's, the core's
            # and Envoy's request histograms have a sample.
            async with wapi(stack.edge) as alice:
                await alice.login("alice")
            async with httpx.AsyncClient(base_url=stack.url, timeout=seconds()) as http:
                assert (await http.get("/healthz")).status_code == 200
            available = (
                await exposed(core_listener.port)
                | await exposed(edge_listener.port)
                | await exposed_as_written(stack.admin_port, "/stats/prometheus")
            )
    finally:
        core_listener.close()
        edge_listener.close()
    assert sorted(used - available) == []
