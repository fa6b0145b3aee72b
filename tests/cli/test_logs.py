"""cli/logs.py: one JSON object per line, naming its node in a cluster."""

from __future__ import annotations

import json
import logging

from cli.logs import JsonFormatter, setup


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


def test_debug_is_for_wac_s_own_lines_libraries_stay_at_info() -> None:
    # Libraries write what they carry at debug (websockets every frame and
    # header, aiosqlite every statement's parameters): never in wac's logs.
    root, wac = logging.getLogger(), logging.getLogger("wac")
    saved = (root.handlers[:], root.level, wac.level)
    try:
        setup("debug", "edge")
        assert logging.getLogger("wac.rpc").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("websockets.server").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)
        setup("warning", "edge")
        assert not logging.getLogger("wac.rpc").isEnabledFor(logging.INFO)
        assert not logging.getLogger("websockets.server").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        wac.setLevel(saved[2])
