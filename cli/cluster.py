"""``wac cluster``: a cluster on this machine, for a newcomer to see.

Two cores and two edges (``--cores``, ``--edges``) on one PostgreSQL, with
Redis beside them and one Envoy in front, every process supervised as in
``wac run`` (cli/supervisor.py). Without ``[core] database_url`` or
``[cluster] redis_url`` a throwaway server is started for each
(cli/throwaway.py) and removed on stop.

Every node reads the same configuration; what differs between nodes is
given to each in its environment: its ports and data dir, its node id.

- core N listens on ``[core] listen``'s port + N-1, with its own data dir
  (``DATA_DIR/cluster/core-N``), as one core holds a data dir's lock.
- edge N listens on ``[edge] listen`` and ``http_listen``'s ports + 2(N-1).
- Envoy listens on ``[envoy] listen`` (the front door: gRPC and REST
  balanced round robin over the healthy cores, WebSockets and long polls to
  the edge holding the fewest), and on a side door for the edges on
  127.0.0.1 (``--hop-port``, default: the port after the last core's).

The edges reach the cores through that side door rather than one core each:
an edge then names one address whatever the number of cores, keeps working
when a core dies (Envoy's health checks take it out), and a core joining
needs no change on the edges. The cost is one more local hop per call.

The launcher prepares what the cores would otherwise race for: the schema
(migrated once, before any core starts) and the hop key (provisioned once
and copied into every node's data dir; a core finding no key there makes a
new one and ends every other, so the second core would cut the first one's
edge off). The SIP gateway and Janus are left out: their ports and keys are one per
machine.

The cores share their state through the Redis (``[cluster] redis_url``,
core/cluster/choose.py): events, devices, the ownership of calls and
presence subjects, and connector runs, so a scenario may span both cores
and a core that dies or restarts leaves the other's devices and calls alone
(tests/cluster/test_faults.py kills them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cli import envoy, throwaway
from cli.supervisor import Child, Supervisor
from settings import checks, datadir, hopkey
from settings.config import Config, ConfigError

# Held by `wac cluster` for its life, in the configured data dir.
CLUSTER_LOCK = "cluster.lock"
# Envoy's admin interface in its data dir, when [envoy] admin_port is 0.
ADMIN_SOCKET = "envoy-admin.sock"
EXIT_CONFIG = 78


@dataclass(frozen=True)
class Node:
    """One supervised core or edge: its name, data dir and addresses."""

    name: str
    role: str
    data_dir: Path
    # The addresses it listens on, for the summary and the port check.
    listens: tuple[str, ...]
    # Its configuration beyond the shared one, as WAC_* variables.
    env: dict[str, str]


@dataclass(frozen=True)
class Plan:
    """What `wac cluster` runs, where."""

    root: Path
    cores: tuple[Node, ...]
    edges: tuple[Node, ...]
    front: str
    hop_port: int

    @property
    def envoy_dir(self) -> Path:
        return self.root / "envoy"

    def addresses(self) -> list[tuple[str, str]]:
        """Each address the cluster listens on, with who listens there."""
        found = [(address, node.name) for node in (*self.cores, *self.edges) for address in node.listens]
        return [*found, (self.front, "Envoy's front door"), (f"127.0.0.1:{self.hop_port}", "Envoy's side door")]


def plan(config: Config, *, cores: int, edges: int, hop_port: int | None) -> Plan:
    """Name each node and give it its ports and data dir (see the module's docstring)."""
    if cores < 1 or edges < 1:
        raise ConfigError("a cluster needs at least one core and one edge")
    root = config.data_dir / "cluster"
    core_host, core_port = checks.split_address(config.core.listen)
    ws_host, ws_port = checks.split_address(config.edge.listen)
    http_host, http_port = checks.split_address(config.edge.http_listen)
    hop_port = core_port + cores if hop_port is None else hop_port
    for port in (core_port + cores - 1, ws_port + 2 * (edges - 1), http_port + 2 * (edges - 1), hop_port):
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} of the cluster's plan is out of range: choose lower base ports")
    core_nodes = []
    for index in range(cores):
        name = f"core-{index + 1}"
        listen = f"{core_host}:{core_port + index}"
        env = {"WAC_CORE_LISTEN": listen}
        metrics = _nth(config.core.metrics_listen, index)
        if metrics:
            env["WAC_CORE_METRICS_LISTEN"] = metrics
        core_nodes.append(Node(name, "core", root / name, (listen, *_probed(metrics)), env))
    edge_nodes = []
    for index in range(edges):
        name = f"edge-{index + 1}"
        listen = f"{ws_host}:{ws_port + 2 * index}"
        http_listen = f"{http_host}:{http_port + 2 * index}"
        env = {
            "WAC_EDGE_LISTEN": listen,
            "WAC_EDGE_HTTP_LISTEN": http_listen,
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{hop_port}",
        }
        metrics = _nth(config.edge.metrics_listen, index)
        if metrics:
            env["WAC_EDGE_METRICS_LISTEN"] = metrics
        edge_nodes.append(Node(name, "edge", root / name, (listen, http_listen, *_probed(metrics)), env))
    return Plan(root, tuple(core_nodes), tuple(edge_nodes), config.envoy.listen, hop_port)


def _nth(address: str, index: int) -> str:
    """The index-th core's or edge's /metrics address: the configured port
    plus 2 x index, so that the cores' (9464, 9466, ...) and the edges'
    (9465, 9467, ...) interleave from the defaults (empty: none; port 0:
    any free port for each)."""
    if not address:
        return ""
    host, port = checks.split_address(address, any_port=True)  # checked with the configuration
    port = port + 2 * index if port else 0
    if not 0 <= port < 65536:
        raise ConfigError(f"port {port} of the cluster's plan is out of range: choose lower base ports")
    return f"{host}:{port}"


def _probed(metrics: str) -> tuple[str, ...]:
    """The /metrics address among a node's listens, unless none or any free port."""
    return (metrics,) if metrics and not metrics.endswith(":0") else ()


def taken_ports(plan: Plan) -> list[str]:
    """The planned addresses something already listens on, each with who was to listen there."""
    taken = []
    for address, who in plan.addresses():
        host, port = checks.split_address(address)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(f"{address} ({who})")
    return taken


def with_database(config: Config, database_url: str) -> Config:
    return dataclasses.replace(config, core=dataclasses.replace(config.core, database_url=database_url))


async def provision_hop_key(config: Config, path: Path) -> str:
    """The hop key, made once for every node (see the module's docstring)."""
    from core.db.engine import create_engine
    from core.db.work import dispose
    from core.server import identity_with_followers

    engine = create_engine(config.database_url)
    try:
        identity, _ = identity_with_followers(config, engine)
        return await identity.provision_service_key(hopkey.NAME, [hopkey.SCOPE], path)
    finally:
        await dispose(engine)


def render_envoy(config: Config, plan: Plan, hop_key: str) -> list[str]:
    """Write and validate the cluster's envoy.yaml; the command that runs it."""
    host, port = checks.split_address(plan.front)
    plan.envoy_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    admin_socket = None if config.envoy.admin_port else plan.envoy_dir / ADMIN_SOCKET
    if admin_socket is not None:
        # A killed Envoy leaves it behind, and Envoy cannot bind over it;
        # the cluster's lock says no other Envoy of this cluster runs.
        admin_socket.unlink(missing_ok=True)
    envoy.raise_fd_limit()
    text = envoy.render_config(
        listen_host=host,
        listen_port=port,
        core_address=[_connectable(node.listens[0]) for node in plan.cores],
        edge_address=[_connectable(node.listens[0]) for node in plan.edges],
        edge_http_address=[_connectable(node.listens[1]) for node in plan.edges],
        admin_port=config.envoy.admin_port or 9901,
        admin_socket=admin_socket,
        max_connections=config.envoy.max_connections,
        upgrades_per_address=config.envoy.upgrades_per_address,
        hop_key=hop_key,
        hop_listen_port=plan.hop_port,
        otlp_endpoint=config.tracing.otlp_endpoint,
        sample_ratio=config.tracing.sample_ratio,
    )
    path = plan.envoy_dir / "envoy.yaml"
    # It holds the hop key: private before the secret is written.
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    envoy.validate_config(path)
    return envoy.envoy_command(path, log_level=config.envoy.log_level, concurrency=config.envoy.workers or None)


def _connectable(listen: str) -> str:
    """Where to reach a server that listens on ``listen`` (0.0.0.0 means here)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "", "[::]") else listen


def _shown(url: str, given: bool) -> str:
    # A given URL may carry a password: only its scheme and host are shown.
    if not given:
        return f"{url} (throwaway: removed on stop)"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/... (given)"


def summary(config: Config, plan: Plan, database: str, redis: str, *, database_given: bool, redis_given: bool) -> str:
    admin = f"127.0.0.1:{config.envoy.admin_port}" if config.envoy.admin_port else str(plan.envoy_dir / ADMIN_SOCKET)
    lines = [
        f"wac cluster: {len(plan.cores)} cores and {len(plan.edges)} edges on one database",
        f"  front door (Envoy)  http://{plan.front}  SAPI /sapi/v1/, WAPI /wapi, gRPC; the demo at /",
    ]
    lines += [f"  {node.name:<18}  gRPC {node.listens[0]}  data dir {node.data_dir}" for node in plan.cores]
    lines += [
        f"  {node.name:<18}  WebSocket {node.listens[0]}  HTTP {node.listens[1]}  (to the cores through Envoy)"
        for node in plan.edges
    ]
    lines += [
        f"  {'side door (Envoy)':<18}  127.0.0.1:{plan.hop_port}  the edges' way to the cores",
        f"  {'Envoy admin':<18}  {admin}",
        f"  {'PostgreSQL':<18}  {_shown(database, database_given)}",
        f"  {'Redis':<18}  {_shown(redis, redis_given)}; not used by the cores yet",
        "Not shared between cores yet: events, devices, call ownership (a scenario across two cores fails).",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def run(
    config: Config,
    config_args: list[str],
    *,
    cores: int = 2,
    edges: int = 2,
    hop_port: int | None = None,
    seed: Callable[[Config], Coroutine[Any, Any, int]] | None = None,
) -> int:
    """Start the cluster and supervise it until Ctrl-C or SIGTERM; stop everything.

    ``seed`` runs once against the database before the cores start (``--demo``)."""
    if config.core.database_url.startswith("sqlite"):
        print(
            "wac cluster: cores share PostgreSQL, not SQLite: set [core] database_url to a PostgreSQL URL, "
            "or leave it empty for a throwaway server",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        layout = plan(config, cores=cores, edges=edges, hop_port=hop_port)
        lock = datadir.lock(config.data_dir, CLUSTER_LOCK, what="wac cluster")
    except ConfigError as exc:
        print(f"wac cluster: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    taken = taken_ports(layout)
    if taken:
        lock.close()
        print(
            f"wac cluster: already in use: {', '.join(taken)}. Stop what listens there, "
            "or move the cluster ([core] listen, [edge] listen and http_listen, [envoy] listen, --hop-port).",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if config.gateway.enabled:
        print(
            "wac cluster: running without the SIP gateway (one per machine; not part of the local cluster)",
            file=sys.stderr,
        )
    if config.conferences.enabled:
        print(
            "wac cluster: running without conferences (Janus is one per machine; not part of the local cluster)",
            file=sys.stderr,
        )
    # Until the supervisor takes them over, SIGTERM unwinds like Ctrl-C, so
    # the throwaway servers started meanwhile are stopped and removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    database_given, redis_given = bool(config.core.database_url), bool(config.cluster.redis_url)
    with lock, contextlib.ExitStack() as servers:
        try:
            database_url = config.core.database_url or servers.enter_context(throwaway.postgres())
            shared_redis = config.cluster.redis_url or servers.enter_context(throwaway.redis())
            config = with_database(config, database_url)
            from core.db.migrate import upgrade

            # Once, before any core: two cores migrating a new database at once race.
            upgrade(database_url)
            if seed is not None:
                asyncio.run(seed(config))
            for node in (*layout.cores, *layout.edges):
                datadir.prepare(node.data_dir)
            hop_key = config.core.hop_key
            if not hop_key:
                from core.identity.service_keys import write_key

                hop_key = asyncio.run(provision_hop_key(config, layout.root / hopkey.FILE_NAME))
                for node in (*layout.cores, *layout.edges):
                    write_key(node.data_dir / hopkey.FILE_NAME, hop_key)
            envoy_argv = render_envoy(config, layout, hop_key)
        except (ConfigError, ValueError, envoy.EnvoyError, throwaway.ThrowawayError) as exc:
            print(f"wac cluster: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except SQLAlchemyError as exc:
            # A given database that does not answer, or refuses wac's user.
            print(f"wac cluster: the database at {_shown(database_url, database_given)}: {exc}", file=sys.stderr)
            return 1
        shared = {
            "WAC_CORE_DATABASE_URL": database_url,
            "WAC_CLUSTER_REDIS_URL": shared_redis,
            # One per machine: each core would bind the gateway's ports.
            "WAC_GATEWAY_ENABLED": "false",
            # Likewise Janus's: the cores say conferences are off.
            "WAC_CONFERENCES_ENABLED": "false",
        }
        program = [sys.executable, "-m", "cli", *config_args]
        children = [
            Child(
                node.name,
                [*program, node.role],
                {**shared, **node.env, "WAC_DATA_DIR": str(node.data_dir), "WAC_CLUSTER_NODE_ID": node.name},
            )
            for node in (*layout.cores, *layout.edges)
        ]
        children.append(Child("envoy", envoy_argv))
        print(
            summary(
                config,
                layout,
                database_url,
                shared_redis,
                database_given=database_given,
                redis_given=redis_given,
            ),
            flush=True,
        )
        try:
            return asyncio.run(Supervisor([], config_args, children=children, status_dir=config.data_dir).run())
        finally:
            # Leaving asyncio.run restored SIGTERM's default: a second one
            # must not cut short the stop of the throwaway servers.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
