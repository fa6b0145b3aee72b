"""cli/logs.py: one JSON object per line, naming its node in a cluster."""

from __future__ import annotations

import json
import logging

from cli.logs import JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("wac.calls", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_the_record_s_extra_fields() -> None:
    line = json.loads(JsonFormatter().format(record("call ended", call_id="c1")))
    assert (line["level"], line["logger"], line["message"], line["call_id"]) == (
        "warning",
        "wac.calls",
        "call ended",
        "c1",
    )
    assert "node" not in line, "one process: no node to name"


def test_a_cluster_node_names_itself_on_every_line() -> None:
    line = json.loads(JsonFormatter("core-2").format(record("login")))
    assert line["node"] == "core-2"
