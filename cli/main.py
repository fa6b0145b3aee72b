"""The ``wac`` command.

    wac run [--demo]            everything of the embedded default, supervised (the gateway too when installed)
    wac cluster [--demo] [--cores N] [--edges N] [--hop-port PORT]
                                a local cluster: cores and edges on PostgreSQL and Redis behind one Envoy
    wac core                    the gRPC core alone
    wac edge                    the WAPI edge alone (WebSocket and HTTP)
    wac gateway                 the SIP gateway alone (Kamailio, gateway/kamailio.cfg.tmpl)
    wac rtpengine               the gateway's media anchor alone (rtpengine, userspace)
    wac migrate                 bring the database schema up to date
    wac status [--json]         each child of `wac run`, the readiness, sockets and calls
    wac admin subscriber add USERNAME --password PASSWORD [--display-name NAME]
                                [--phone E164]... [--email ADDR] [--role ROLE]...
    wac admin subscriber list | passwd USERNAME --password P | disable USERNAME | enable USERNAME
    wac admin apikey create NAME --scope SCOPE [--scope SCOPE]...
    wac admin apikey list | revoke NAME | rotate NAME [--grace SECONDS]
    wac connectors sync NAME [--full]   run one connector now (no running core needed)
    wac connectors list                 each connector and its last run
    wac --version                       the installed package's version

Every command takes ``--config FILE`` (or ``WAC_CONFIG``); see
``wac.example.toml`` for every key and its ``WAC_*`` override.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cli.forked import in_child
from settings import datadir
from settings.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from core.directory.records import SyncRunRecord
    from core.failures import Failure
    from core.identity.handler import IdentityHandler

DEMO_SUBSCRIBERS = (
    ("alice", "Alice Liddell", "+34600111001"),
    ("bob", "Bob Marley", "+34600111002"),
)


class _Version(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata costs
    every process that parses a command line (the supervisor, the core, the
    edge) about 4.5 MiB resident, and a scan of the installed packages."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from cli.version import version

        print(f"wac {version()}")  # on stdout, as argparse's own version action
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wac", description="WebRTC Application Controller")
    parser.add_argument("--config", help="TOML configuration file (default: $WAC_CONFIG, else built-in defaults)")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the installed package's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run everything (core, WAPI edge, Envoy, and the SIP gateway when installed) supervised"
    )
    run.add_argument("--demo", action="store_true", help="create the demo subscribers alice and bob if missing")
    cluster = commands.add_parser(
        "cluster",
        help="a local cluster on this machine (2 cores, 2 edges, PostgreSQL, Redis, Envoy), supervised",
    )
    cluster.add_argument("--demo", action="store_true", help="create the demo subscribers alice and bob if missing")
    cluster.add_argument("--cores", type=int, default=2, help="how many cores (default 2)")
    cluster.add_argument("--edges", type=int, default=2, help="how many WAPI edges (default 2)")
    cluster.add_argument(
        "--hop-port", type=int, default=None, help="Envoy's side door for the edges (default: after the last core's)"
    )
    commands.add_parser("core", help="run the gRPC core alone")
    commands.add_parser("edge", help="run the WAPI edge alone (JSON-RPC over WebSocket and HTTP)")
    commands.add_parser("envoy", help="run the Envoy front door alone (SAPI, WAPI, gRPC on one port)")
    commands.add_parser("gateway", help="run the SIP gateway alone (Kamailio: SIP over WebSocket and the trunk)")
    commands.add_parser("rtpengine", help="run the gateway's media anchor alone (rtpengine, userspace)")
    commands.add_parser("janus", help="run the conferences' media server alone (Janus, VideoRoom only)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    status = commands.add_parser(
        "status", help="the wac run of this data dir: children, readiness, sockets, calls (exit 0, 1 unready, 3 off)"
    )
    status.add_argument("--json", action="store_true", help="the same as one JSON document")

    admin = commands.add_parser("admin", help="provisioning").add_subparsers(dest="object", required=True)
    sub = admin.add_parser("subscriber", help="manage subscribers").add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create a subscriber")
    add.add_argument("username")
    add.add_argument("--password", required=True)
    add.add_argument("--display-name", default="")
    add.add_argument("--phone", action="append", default=[])
    add.add_argument("--email", default="")
    add.add_argument("--role", action="append", default=[])
    sub.add_parser("list", help="list subscribers")
    passwd = sub.add_parser("passwd", help="set a password (ends the subscriber's sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password", required=True)
    disable = sub.add_parser("disable", help="disable a subscriber (ends its sessions)")
    disable.add_argument("username")
    enable = sub.add_parser("enable", help="enable a disabled subscriber")
    enable.add_argument("username")
    apikey = admin.add_parser("apikey", help="manage API keys").add_subparsers(dest="action", required=True)
    create = apikey.add_parser("create", help="create an API key; it is printed once, on the last line")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True)
    apikey.add_parser("list", help="every key: name, id, scopes, created, last used, revoked or rotated")
    revoke = apikey.add_parser("revoke", help="end the key named NAME now, on every core within a second")
    revoke.add_argument("name")
    rotate = apikey.add_parser(
        "rotate",
        help="a new key for NAME, same scopes, printed once on the last line; the old one works --grace s more",
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        type=float,
        default=24 * 3600.0,
        help="seconds the replaced key keeps working (default 86400; 0 ends it now)",
    )

    connectors = commands.add_parser("connectors", help="directory connectors (LDAP, Google contacts)")
    connector_actions = connectors.add_subparsers(dest="action", required=True)
    sync = connector_actions.add_parser("sync", help="run a connector now and print the run; exit 1 if it failed")
    sync.add_argument("name", help='a [connectors.NAME] section, or "google:USERNAME" for a linked subscriber')
    sync.add_argument("--full", action="store_true", help="read everything, removing entries that are gone")
    connector_actions.add_parser("list", help="each connector and its last run")
    return parser


def _run(coro: Awaitable[int]) -> int:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_identity(config: Config, action: Callable[[IdentityHandler], Awaitable[int]]) -> int:
    """Run an admin action against the database, the same validation as the API."""
    from core.db.engine import create_engine
    from core.db.migrate import upgrade
    from core.db.work import dispose
    from core.server import identity_with_followers

    config.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade, config.database_url)
    engine = create_engine(config.database_url)
    try:
        # A running core learns of revocations made here by its revocation
        # poll. Built as the core builds it, so a subscriber changed here
        # reaches what follows subscribers (the directory's mirror) at once.
        identity, _ = identity_with_followers(config, engine)
        return await action(identity)
    finally:
        await dispose(engine)


async def _admin(config: Config, args: argparse.Namespace) -> int:
    from wac.v1 import identity_pb2

    async def act(identity: IdentityHandler) -> int:
        if args.object == "apikey":
            return await _apikey(identity, args)
        if args.action == "add":
            row = await identity.create(
                identity_pb2.Subscriber(
                    username=args.username,
                    password=args.password,
                    display_name=args.display_name,
                    phone_numbers=args.phone,
                    email=args.email,
                    roles=args.role,
                )
            )
            print(f"created subscriber {row.username} ({', '.join(row.roles)})")
        elif args.action == "list":
            after = ""
            while rows := await identity.list_subscribers(after, 500):
                for row in rows:
                    state = "disabled" if row.disabled else "enabled"
                    print(
                        f"{row.username}\t{row.display_name}\t{','.join(row.phone_numbers)}\t{','.join(row.roles)}\t{state}"
                    )
                after = rows[-1].username
        elif args.action == "passwd":
            await identity.update(identity_pb2.Subscriber(username=args.username, password=args.password), ["password"])
            print(f"password of {args.username} changed; its sessions were ended")
        elif args.action in ("disable", "enable"):
            disabled = args.action == "disable"
            await identity.update(identity_pb2.Subscriber(username=args.username, disabled=disabled), ["disabled"])
            print(f"{args.username} {args.action}d")
        return 0

    return await _with_identity(config, act)


async def _apikey(identity: IdentityHandler, args: argparse.Namespace) -> int:
    """``wac admin apikey``: a new key is printed once, alone on the last line."""
    if args.action == "create":
        key = await identity.create_api_key(args.name, args.scope)
        print(f"API key '{args.name}' with scopes {', '.join(args.scope)}. It is shown only now:")
        print(key)
    elif args.action == "list":
        now = time.time()
        print("NAME\tKEY ID\tSCOPES\tCREATED\tLAST USED\tREVOKED")
        for row in await identity.list_api_keys():
            if row.revoke_time is None:
                state = "-"
            elif row.revoke_time > now:
                state = f"rotated, works until {_utc(row.revoke_time)}"
            else:
                state = _utc(row.revoke_time)
            used = _utc(row.last_used_time) if row.last_used_time is not None else "never"
            print(f"{row.name}\t{row.key_id}\t{','.join(row.scopes)}\t{_utc(row.create_time)}\t{used}\t{state}")
    elif args.action == "revoke":
        count = await identity.revoke_api_key(args.name)
        keys = "its key" if count == 1 else f"its {count} keys"
        print(f"API key '{args.name}' revoked ({keys}); every running core refuses it within a second")
    elif args.action == "rotate":
        key = await identity.rotate_api_key(args.name, args.grace)
        until = _utc(time.time() + args.grace)
        print(f"API key '{args.name}' rotated; the previous key works until {until}. The new one is shown only now:")
        print(key)
    return 0


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))


async def _connectors(config: Config, args: argparse.Namespace) -> int:
    """``wac connectors``: one run in this process, against the configured
    database. A running core is not needed, and its schedule is not started
    here: this process runs the one connector named, once."""
    from connectors.google import TYPE as GOOGLE
    from connectors.google import GoogleLinker
    from connectors.setup import configured, google_linker
    from core.db.engine import create_engine
    from core.db.migrate import upgrade
    from core.db.work import dispose
    from core.directory.connector import Connector
    from core.directory.google import connector_name
    from core.directory.link_store import BROKEN, LINKED
    from core.directory.records import RunState
    from core.directory.runner import SyncRunner
    from core.directory.store import DirectoryStore

    try:
        wanted = configured(config.connectors)
    except ConfigError as exc:
        print(f"wac: configuration error: {exc}", file=sys.stderr)
        return 2
    # The outcome is printed below; the runner's own warning would repeat it.
    logging.getLogger("wac.connectors").setLevel(logging.ERROR)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade, config.database_url)
    engine = create_engine(config.database_url)
    try:
        store = DirectoryStore(engine)
        found: dict[str, Connector] = {c.name: c for c in wanted.ldap}
        linker: GoogleLinker | None = None
        if wanted.google is not None:
            linker = google_linker(wanted.google, store)
            for state in (LINKED, BROKEN):
                for username in await linker.links.usernames(state):
                    found[connector_name(username)] = linker.connector(username)

        if args.action == "list":
            if not found:
                print("no connectors are configured ([connectors.NAME] sections)")
            for name, listed in sorted(found.items()):
                last = await store.last_run(name)
                print(f"{name}\t{listed.type}\t{_describe_run(last) if last else 'never run'}")
            return 0

        connector = found.get(args.name)
        if connector is None:
            if args.name.startswith(f"{GOOGLE}:") and linker is not None:
                problem = f"{args.name.partition(':')[2]} has not linked a Google account"
            else:
                problem = f"no connector named {args.name}; configured: {', '.join(sorted(found)) or 'none'}"
            print(f"wac: {problem}", file=sys.stderr)
            return 2
        run = await SyncRunner(store, [connector]).run(args.name, full=args.full)
        print(f"{run.connector}: {_describe_run(run)}")
        if run.state is not RunState.SUCCEEDED:
            print(f"wac: sync of {run.connector} failed: {run.error}", file=sys.stderr)
            return 1
        return 0
    finally:
        await dispose(engine)


def _describe_run(run: SyncRunRecord) -> str:
    """'SUCCEEDED, full run of 0.42 s at 2025-01-31 10:00:00Z: 12 added, 0 updated, 0 removed, 2 skipped'."""
    kind = "full" if run.full else "incremental"
    took = f"{run.duration:.2f} s" if run.duration is not None else "(still running)"
    at = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(run.start_time))
    counts = f"{run.added} added, {run.updated} updated, {run.removed} removed, {run.skipped} skipped"
    text = f"{run.state.value}, {kind} run of {took} at {at}: {counts}"
    return f"{text}; error: {run.error}" if run.error else text


async def _seed_demo(config: Config) -> int:
    """Create alice and bob with fresh random passwords, once."""
    import secrets

    from wac.v1 import identity_pb2

    credentials = config.data_dir / "demo-credentials.txt"

    async def act(identity: IdentityHandler) -> int:
        created = []
        for username, name, phone in DEMO_SUBSCRIBERS:
            if await identity.find(username) is None:
                password = secrets.token_urlsafe(9)
                await identity.create(
                    identity_pb2.Subscriber(
                        username=username, password=password, display_name=name, phone_numbers=[phone]
                    )
                )
                created.append(f"{username}\t{password}")
        if created:
            credentials.write_text("".join(f"{line}\n" for line in created))
            credentials.chmod(0o600)
            print("demo subscribers (username, password) — also kept in " + str(credentials))
            for line in created:
                print("  " + line)
        elif credentials.exists():
            print(f"demo subscribers exist; their passwords are in {credentials}")
        return 0

    return await _with_identity(config, act)


# Commands that serve until stopped: a hangup of their terminal (SIGHUP)
# must not kill them, and in `wac run` it must not kill the supervisor and
# orphan its children with their ports. Nothing reloads: a new configuration
# takes a restart.
LONG_RUNNING = ("run", "cluster", "core", "edge", "envoy", "gateway", "rtpengine")


def main(argv: list[str] | None = None) -> int:
    # First, so that nothing this process or its children (Envoy included)
    # writes in the data dir is readable by other users.
    datadir.private_umask()
    args = _parser().parse_args(argv)
    if args.command in LONG_RUNNING:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(args.config)
        datadir.prepare(config.data_dir)
    except ConfigError as exc:
        # EX_CONFIG: `wac run` stops instead of restarting a child that
        # will fail the same way.
        print(f"wac: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config_args = ["--config", args.config] if args.config else []
    from cli import logs

    try:
        if args.command == "core":
            logs.setup(os.environ.get("WAC_LOG_LEVEL", "info"), "core", config.cluster.node_id)
            # Alembic's migrations in a child: the serving core never loads Alembic.
            migrated = in_child(functools.partial(_migrate_core, config))
            if migrated != 0:
                return migrated
            from core.server import serve

            try:
                asyncio.run(serve(config, migrate=False))
            except ConfigError as exc:
                print(f"wac core: configuration error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            except OSError as exc:
                # The port is taken (gRPC's port reuse is off): another
                # program has it, and a restart would meet it again.
                print(f"wac core: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            return 0
        if args.command == "edge":
            from edges.wapi.server import serve as serve_edge

            logs.setup(os.environ.get("WAC_LOG_LEVEL", "info"), "edge", config.cluster.node_id)
            try:
                asyncio.run(serve_edge(config))
            except ConfigError as exc:
                print(f"wac edge: configuration error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            return 0
        if args.command == "envoy":
            return _envoy(config)
        if args.command == "gateway":
            return _gateway(config)
        if args.command == "rtpengine":
            return _rtpengine(config)
        if args.command == "janus":
            return _janus(config)
        if args.command == "status":
            from cli import status

            return status.show(config, as_json=args.json)
        if args.command == "migrate":
            _migrate(config)
            print(f"database at head: {config.database_url}")
            return 0
        if args.command == "admin":
            try:
                return _run(_admin(config, args))
            except ConfigError as exc:
                # identity.key_seal_secret malformed: a message, not a traceback.
                print(f"wac: configuration error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
        if args.command == "connectors":
            return _run(_connectors(config, args))
        if args.command == "cluster":
            from cli import cluster

            return cluster.run(
                config,
                config_args,
                cores=args.cores,
                edges=args.edges,
                hop_port=args.hop_port,
                seed=_seed_demo if args.demo else None,
            )
        if args.command == "run":
            from cli.supervisor import Supervisor

            try:
                # Held until this process ends; the core child takes its own.
                run_lock = datadir.lock(config.data_dir, datadir.RUN_LOCK, what="wac run")
            except ConfigError as exc:
                print(f"wac: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            # The supervisor only starts and watches: the database layer
            # and the core it takes to prepare the data load in a child.
            prepared = in_child(functools.partial(_prepare_run, config, demo=args.demo))
            if prepared != 0:
                return prepared
            roles = available_roles(config)
            for line in metrics_addresses(config):
                print(f"wac: metrics: {line}", file=sys.stderr)
            # The children read it: a core announces the gateway at login
            # only while one runs.
            os.environ.update(children_env(config, roles))
            try:
                return asyncio.run(Supervisor(roles, config_args, status_dir=config.data_dir).run())
            finally:
                run_lock.close()
    except KeyboardInterrupt:
        return 130
    except _failure() as exc:
        print(f"wac: {exc.message}", file=sys.stderr)
        return 1
    return 2


def _failure() -> type[Failure]:
    """The core's domain failure. An except clause evaluates its type only
    when an exception arrives: the supervisor and the edge, which never use
    the core, do not load it to be ready for one."""
    from core.failures import Failure

    return Failure


def _migrate(config: Config) -> int:
    """Bring the database schema up to date (Alembic: imported here only)."""
    from core.db.migrate import upgrade

    config.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(config.database_url)
    return 0


def _migrate_core(config: Config) -> int:
    try:
        return _migrate(config)
    except OSError as exc:
        # The data dir cannot be written: a restart would meet it again.
        print(f"wac core: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _prepare_run(config: Config, *, demo: bool) -> int:
    """What ``wac run`` does to the database before its children start:
    the schema, and with ``--demo`` the demo subscribers."""
    try:
        return _run(_seed_demo(config)) if demo else _migrate(config)
    except _failure() as exc:
        print(f"wac: {exc.message}", file=sys.stderr)
        return 1


# The supervisor does not restart a child that exits with this code: a
# configuration that fails validation will fail again (sysexits' EX_CONFIG).
EXIT_CONFIG = 78


def _envoy(config: Config) -> int:
    """Render and validate the front door's configuration, then become Envoy."""
    from cli import envoy
    from settings import checks
    from settings.hopkey import read_hop_key

    try:
        host, port = checks.split_address(config.envoy.listen)  # checked with the configuration
        # Envoy inherits the raised limit, and the connection ceiling
        # rendered below is sized to it.
        envoy.raise_fd_limit()
        admin_socket = None if config.envoy.admin_port else config.data_dir / ADMIN_SOCKET
        if admin_socket is not None:
            _clear_stale_socket(admin_socket)
        text = envoy.render_config(
            listen_host=host,
            listen_port=port,
            core_address=_connectable(config.core.listen),
            edge_address=_connectable(config.edge.listen),
            edge_http_address=_connectable(config.edge.http_listen),
            gateway_ws_address=_connectable(config.gateway.ws_listen),
            janus_ws_address=_connectable(config.conferences.janus_ws_listen),
            admin_port=config.envoy.admin_port or 9901,
            admin_socket=admin_socket,
            max_connections=config.envoy.max_connections,
            upgrades_per_address=config.envoy.upgrades_per_address,
            # Under wac run the core writes it a moment after it starts.
            hop_key=read_hop_key(config, HOP_KEY_WAIT),
            otlp_endpoint=config.tracing.otlp_endpoint,
            sample_ratio=config.tracing.sample_ratio,
        )
        path = config.data_dir / "envoy.yaml"
        # It holds the hop key: private before the secret is written.
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
        envoy.validate_config(path)
        command = envoy.envoy_command(
            path, log_level=config.envoy.log_level, concurrency=config.envoy.workers or envoy.NODE_WORKERS
        )
    except (ValueError, envoy.EnvoyError, ConfigError) as exc:
        print(f"wac envoy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    os.execv(command[0], command)


# Seconds `wac envoy` waits for the core to write the hop key.
HOP_KEY_WAIT = 30.0


# Envoy's admin interface, in the data dir, when [envoy] admin_port is 0.
ADMIN_SOCKET = "envoy-admin.sock"


def metrics_addresses(config: Config) -> list[str]:
    """Where ``wac run``'s processes serve the Prometheus text format
    (README, Metrics): the core's and the edge's /metrics, and Envoy's
    statistics on its admin interface."""
    lines = [
        f"{role} http://{address}/metrics"
        for role, address in (("core", config.core.metrics_listen), ("edge", config.edge.metrics_listen))
        if address
    ]
    if config.envoy.admin_port:
        lines.append(f"envoy http://127.0.0.1:{config.envoy.admin_port}/stats/prometheus")
    else:
        socket_path = config.data_dir / ADMIN_SOCKET
        lines.append(f"envoy curl --unix-socket {socket_path} http://localhost/stats/prometheus")
    return lines


def _clear_stale_socket(path: Path) -> None:
    """Remove the admin socket a killed Envoy left behind; refuse if an Envoy still answers on it.

    Envoy cannot bind a unix socket whose file exists."""
    import socket

    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ValueError(f"another Envoy is running on {path} (same data dir); stop it first")


def _connectable(listen: str) -> str:
    """Where to reach a server that listens on ``listen`` (0.0.0.0 means here)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "", "[::]") else listen


def children_env(config: Config, roles: list[str]) -> dict[str, str]:
    """What ``wac run``'s children must be told beyond the configuration:
    a gateway left out (its programs missing) is disabled for them too, so
    that the core neither announces it at login nor provisions its key;
    likewise conferences without Janus."""
    env: dict[str, str] = {}
    if config.gateway.enabled and "gateway" not in roles:
        env["WAC_GATEWAY_ENABLED"] = "false"
    if config.conferences.enabled and "janus" not in roles:
        env["WAC_CONFERENCES_ENABLED"] = "false"
    return env


def available_roles(config: Config | None = None) -> list[str]:
    """The children of ``wac run``, in start order.

    The gateway (rtpengine first, so that Kamailio finds it) joins when
    ``[gateway] enabled`` and its programs are installed; when they are not,
    this says once why and how to add them."""
    roles = ["core", "edge", "envoy"]
    if config is None:
        return roles
    if config.gateway.enabled:
        from cli import gateway

        if _installed("the SIP gateway", "gateway", gateway.missing_programs()):
            roles += ["rtpengine", "gateway"]
    if config.conferences.enabled:
        from cli import janus

        if _installed("conferences", "conferences", janus.missing_programs()):
            roles.append("janus")
    return roles


def _installed(part: str, section: str, absent: list[str]) -> bool:
    """Whether ``part``'s programs are all installed; if not, say once which
    are missing and how to add them (or to silence this)."""
    if absent:
        print(
            f"wac: running without {part}: {' and '.join(absent)} not installed. "
            "Add them with `sudo make system-deps` (deps/debian.txt), "
            f"or set [{section}] enabled = false to silence this.",
            file=sys.stderr,
        )
    return not absent


# Seconds `wac gateway` waits for the core to write the gateway key.
GATEWAY_KEY_WAIT = 30.0


def _gateway_key(config: Config) -> str:
    from settings.gatewaykey import read_gateway_key

    return read_gateway_key(config, GATEWAY_KEY_WAIT)


def _gateway(config: Config) -> int:
    """Render and check Kamailio's script, then become Kamailio."""
    from cli import gateway

    settings = config.gateway
    try:
        if not settings.enabled:
            raise ConfigError("the gateway is disabled ([gateway] enabled = false)")
        text = gateway.render_config(
            domain=settings.domain,
            ws_listen=settings.ws_listen,
            sip_listen=settings.sip_listen,
            jsonrpc_listen=settings.jsonrpc_listen,
            events_listen=settings.events_listen,
            trunk_uri=settings.trunk_uri,
            rtpengine=settings.rtpengine,
            sapi_url=settings.sapi_url or f"http://{_connectable(config.envoy.listen)}",
            # Under wac run the core writes it a moment after it starts.
            gateway_key=(key := _gateway_key(config)),
            workers=settings.workers,
        )
        path = config.data_dir / "kamailio.cfg"
        # It holds the gateway key: private before the secret is written.
        gateway.write_private(path, text)
        gateway.check_config(path, secret=key)
        runtime = config.data_dir / "kamailio"
        runtime.mkdir(mode=0o700, exist_ok=True)
        command = gateway.kamailio_command(
            path, shm_mb=settings.shm_mb, pid_file=config.data_dir / "kamailio.pid", runtime_dir=runtime
        )
    except (ValueError, gateway.GatewayError, ConfigError) as exc:
        print(f"wac gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    os.execv(command[0], command)


def _rtpengine(config: Config) -> int:
    """Become rtpengine: userspace, foreground, on the configured addresses."""
    from cli import gateway

    settings = config.gateway
    try:
        command = gateway.rtpengine_command(
            control=settings.rtpengine,
            media_address=settings.media_address,
            port_min=settings.rtp_port_min,
            port_max=settings.rtp_port_max,
            pid_file=config.data_dir / "rtpengine.pid",
        )
    except (ValueError, gateway.GatewayError) as exc:
        print(f"wac rtpengine: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    os.execv(command[0], command)


def _janus(config: Config) -> int:
    """Write Janus's configuration into the data dir, then become Janus."""
    from cli import janus
    from settings.januskey import janus_secrets

    settings = config.conferences
    try:
        if not settings.enabled:
            raise ConfigError("conferences are off ([conferences] enabled = false)")
        secrets = janus_secrets(config)
        files = janus.render_configs(
            config.data_dir / "janus",
            ws_listen=settings.janus_ws_listen,
            api_listen=settings.janus_api_listen,
            rtp_ports=(settings.rtp_port_min, settings.rtp_port_max),
            ice_interfaces=settings.ice_interfaces,
            public_address=settings.public_address,
            stun_server=settings.stun_server,
            token_secret=secrets.token,
            room_admin_key=secrets.room_admin,
        )
        command = janus.janus_command(janus.write_configs(config.data_dir / "janus", files))
    except (ValueError, janus.JanusError, ConfigError) as exc:
        print(f"wac janus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
