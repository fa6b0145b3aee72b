"""``wac status``: one screen on the ``wac run`` (or ``wac cluster``) of a
data dir, from the status files its processes keep there
(settings/status.py): each child's state, pid, uptime, restarts and listen
addresses, the version, the database, the connected sockets, the active
calls and the readiness. A cluster's cores and edges (``core-N``,
``edge-N``) keep theirs in their own data dirs, ``cluster/<name>/``; its
sockets and calls are the sums over them.

Exit codes (as LSB's ``status``): 0 every child running and the node
ready; 1 ``wac run`` is up but a child is not running or a readiness check
fails; 3 no ``wac run`` is running on this data dir.
"""

from __future__ import annotations

import json
import time
from typing import Any

from settings import status
from settings.config import Config

OK = 0
DEGRADED = 1
NOT_RUNNING = 3

# A core's or edge's file older than this is from a process that stopped.
STALE = 3 * status.INTERVAL


def gather(config: Config, now: float | None = None) -> dict[str, Any]:
    """Everything ``wac status`` shows, as one document (``--json``)."""
    now = time.time() if now is None else now
    run = status.read(config.data_dir, "run")
    running = run is not None and not run.get("stopped") and status.alive(run.get("pid"))
    listens = {
        "core": [config.core.listen],
        "edge": [config.edge.listen, config.edge.http_listen],
        "envoy": [config.envoy.listen],
        "gateway": [config.gateway.ws_listen, config.gateway.sip_listen],
        "rtpengine": [config.gateway.rtpengine],
    }
    children = []
    cores: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for child in (run or {}).get("children", []) if running else []:
        role = str(child.get("role"))
        state = child.get("state", "unknown")
        if state == "running" and not status.alive(child.get("pid")):
            state = "exited"
        listen = listens.get(role, [])
        kind = role.split("-", 1)[0]
        if kind in ("core", "edge"):
            node = _node(config, role, kind, now)
            # In a cluster each check is named after its node: core-2's database.
            prefix = "" if role == kind else f"{role} "
            if node is None:
                failed[prefix + kind] = "not running"
            else:
                (cores if kind == "core" else edges).append(node)
                listen = [node["listen"]] if kind == "core" else list(node["listen"])
                for check, reason in node.get("failed", {}).items():
                    failed[prefix + check] = reason
        children.append(
            {
                "role": role,
                "state": state,
                "pid": child.get("pid") if state == "running" else None,
                "uptime": max(0.0, now - child["started"]) if state == "running" and child.get("started") else None,
                "restarts": child.get("restarts", 0),
                "listen": listen,
            }
        )
    core = cores[0] if cores else None
    return {
        "running": running,
        "pid": run.get("pid") if running and run else None,
        "uptime": max(0.0, now - run["started"]) if running and run and run.get("started") else None,
        "data_dir": str(config.data_dir),
        "version": (core or {}).get("version") or _version(),
        "database": (core or {}).get("database") or _database(config),
        "ready": running and not failed and all(c["state"] == "running" for c in children),
        "failed": failed,
        "children": children,
        "sockets": sum(edge.get("sockets", 0) for edge in edges) if edges else None,
        "active_calls": sum(core.get("active_calls", 0) for core in cores) if cores else None,
    }


def exit_code(document: dict[str, Any]) -> int:
    if not document["running"]:
        return NOT_RUNNING
    return OK if document["ready"] else DEGRADED


def render(document: dict[str, Any]) -> str:
    """The one screen."""
    if not document["running"]:
        return f"wac {document['version']}: not running (data dir {document['data_dir']})\n"
    lines = [
        f"wac {document['version']}: running (pid {document['pid']}, up {_duration(document['uptime'])}, "
        f"data dir {document['data_dir']})",
        f"database: {document['database']}",
        "ready: yes"
        if document["ready"]
        else "ready: NO: " + "; ".join(f"{name}: {reason}" for name, reason in document["failed"].items())
        if document["failed"]
        else "ready: NO: a child is not running",
        f"connected sockets: {_count(document['sockets'])}   active calls: {_count(document['active_calls'])}",
        "",
        f"{'CHILD':<10} {'STATE':<11} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8}  LISTEN",
    ]
    for child in document["children"]:
        lines.append(
            f"{child['role']:<10} {child['state']:<11} {child['pid'] or '-':>7} "
            f"{_duration(child['uptime']):>9} {child['restarts']:>8}  {' '.join(child['listen'])}"
        )
    return "\n".join(lines) + "\n"


def show(config: Config, *, as_json: bool = False) -> int:
    document = gather(config)
    print(json.dumps(document, indent=2) if as_json else render(document), end="\n" if as_json else "")
    return exit_code(document)


def _node(config: Config, role: str, kind: str, now: float) -> dict[str, Any] | None:
    """The status of a core or edge: in the data dir (wac run), or in its own (a cluster's core-N, edge-N)."""
    directory = config.data_dir if role == kind else config.data_dir / "cluster" / role
    return _fresh(status.read(directory, kind), now)


def _fresh(document: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    if document is None or not status.alive(document.get("pid")):
        return None
    written = document.get("time")
    if not isinstance(written, (int, float)) or now - written > STALE:
        return None
    return document


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


def _count(value: object) -> str:
    return "-" if value is None else str(value)


def _version() -> str:
    from cli.version import version

    return version()


def _database(config: Config) -> str:
    url = config.database_url
    if url.startswith("sqlite"):
        return "sqlite " + url.split("///", 1)[1]
    # Kind and place only: the URL may hold a password.
    kind, _, rest = url.partition("://")
    place = rest.rpartition("@")[2]
    return f"{kind.split('+')[0]} {place}"
