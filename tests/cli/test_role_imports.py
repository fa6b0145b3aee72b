"""Each process imports what its role needs (issue 18, memory at rest): the
supervisor of ``wac run`` starts and watches children, so it never loads the
core, the database layer, gRPC or the connectors; the core loads Alembic,
the connectors' clients and Redis's only when it uses them; the edge loads
aiohttp (its HTTP port's server) at that port's first connection. Each check runs
in a fresh interpreter, as the process itself starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cli import ROOT, cli_env
from tests.support.timing import seconds

# What the supervisor must never hold: each is several MiB resident.
NOT_IN_SUPERVISOR = (
    "core",
    "edges",
    "connectors",
    "wac",
    "sqlalchemy",
    "alembic",
    "grpc",
    "google",
    "aiohttp",
    "phonenumbers",
    "prometheus_client",
    "importlib.metadata",
    "opentelemetry",
)
# What the embedded core loads only when configured or asked: migrations
# run in a child of `wac core`; the connectors and the gateway when
# configured; Redis, asyncpg and SQLAlchemy's PostgreSQL dialect in a
# cluster; phonenumbers at the first phone number; OpenTelemetry when
# [tracing] otlp_endpoint is set.
NOT_IN_CORE_AT_REST = (
    "opentelemetry",
    "asyncpg",
    "sqlalchemy.dialects.postgresql",
    "phonenumbers",
    "alembic",
    "mako",
    "ldap3",
    "httpx",
    "authlib",
    "connectors.ldap",
    "connectors.google",
    "connectors.kamailio",
    "redis",
    "hiredis",
)

# What the WAPI edge holds only once its HTTP port has had a connection
# (aiohttp, about 11 MiB), OpenTelemetry only when traces are on, and
# never: the core and the database layer.
NOT_IN_EDGE_AT_REST = (
    "opentelemetry",
    "aiohttp",
    "multidict",
    "yarl",
    "edges.wapi.http",
    "edges.wapi.oauth2",
    "core",
    "sqlalchemy",
    "phonenumbers",
)


def loaded(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def under(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in packages or n.startswith(tuple(f"{p}." for p in packages)))


def test_the_supervisor_loads_neither_the_core_nor_the_database_nor_grpc(tmp_path: Path) -> None:
    # `wac run --demo` as far as its supervisor's loop, which reports the
    # modules then instead of starting children: the schema and the demo
    # subscribers are made on the way (in a child), as on a first run.
    code = (
        "import json, sys\n"
        "from cli import main, supervisor\n"
        "async def report(self):\n"
        "    print(json.dumps(sorted(sys.modules)))\n"
        "    return 0\n"
        "supervisor.Supervisor.run = report\n"
        "sys.exit(main.main(['run', '--demo']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=cli_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=True,
    )
    assert "alice\t" in out.stdout, "the demo subscribers were made (in the forked child)"
    names = set(json.loads(out.stdout.splitlines()[-1]))
    assert "cli.supervisor" in names
    assert under(names, NOT_IN_SUPERVISOR) == []


def test_the_core_loads_optional_parts_when_first_used() -> None:
    names = loaded("cli.main", "core.server")
    assert under(names, NOT_IN_CORE_AT_REST) == []


def test_the_edge_loads_aiohttp_when_its_http_port_is_first_used() -> None:
    names = loaded("cli.main", "edges.wapi.server")
    assert "edges.wapi.http_port" in names
    assert under(names, NOT_IN_EDGE_AT_REST) == []
