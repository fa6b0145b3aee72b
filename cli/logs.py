"""Structured logging: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record. ``node``: the process's [cluster] node_id,
    on every line when set, so a cluster's merged logs say which node spoke."""

    def __init__(self, node: str = "") -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._node:
            entry["node"] = self._node
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "info", process: str = "wac", node: str = "") -> None:
    """Lines at ``level`` from wac's own loggers (``wac.*``), and at info or
    above from every library, whatever ``level`` says.

    Debug is for wac's lines (one per request, which never name a secret).
    Libraries write at debug what they carry: websockets every upgrade's
    headers (the hop key Envoy adds, an ``?access_token=`` in the path) and
    every frame (passwords, tokens, SDPs); aiosqlite every statement with
    its parameters (password hashes, private signing keys); others alike.
    tests/logs/test_no_secrets.py greps a whole `wac run` at debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    wanted = logging.getLevelNamesMapping().get(level.upper())
    if wanted is None:
        raise ValueError(f"WAC_LOG_LEVEL must be debug, info, warning, error or critical, got {level!r}")
    root.setLevel(max(logging.INFO, wanted))
    logging.getLogger("wac").setLevel(wanted)
    logging.getLogger("wac").info("starting", extra={"role": process})
