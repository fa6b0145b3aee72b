"""The composition root of the WAPI edge: one gRPC channel to the core, the
WebSocket server (websockets) and the HTTP server (aiohttp, loaded at the
HTTP port's first connection: ``http_port.py``), in one process.

``start_edge`` returns a running ``Edge`` with its actual ports (config may
say port 0); ``serve`` runs one until SIGTERM or SIGINT, then closes every
socket with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server
from websockets.asyncio.server import serve as ws_serve

from edges.wapi import metrics
from edges.wapi.admission import Admission, ConnectionSlots, OriginPolicy, origin_of
from edges.wapi.core_client import CoreClient
from edges.wapi.dispatch import Dispatcher
from edges.wapi.event_streams import EventStreams
from edges.wapi.health import Readiness, with_probes
from edges.wapi.http_port import HttpPort
from edges.wapi.keepalive import Keepalive
from edges.wapi.methods import MethodTable
from edges.wapi.ws import WsLimits, make_handler, make_process_request
from settings import checks, status, traces
from settings.assets import asset
from settings.collector import tend as collector_tend
from settings.config import Config, EdgeConfig
from settings.hopkey import read_hop_key

if TYPE_CHECKING:
    from edges.wapi.http import HttpEdge

log = logging.getLogger("wac.edge")

DEFAULT_SDK_DIR = asset("clients", "js", "dist")
DEFAULT_DEMO_DIR = asset("clients", "js", "demo")

# Incoming frames websockets buffers before it stops reading the socket. The
# edge reads promptly (bounded by max_inflight), so a few suffice, and each
# may be max_message_bytes long: this bounds the memory a client can pin.
MAX_QUEUE = 4
# The write buffer's high-water mark; beyond it a send waits, and the outbox
# (send_queue messages) takes the excess until it too is full (close 4408).
WRITE_LIMIT = 32 * 1024
# Wait this long for a client's close frame before dropping the TCP connection.
CLOSE_TIMEOUT = 5.0
# Seconds to wait for the core to write the hop key (data_dir/hop.key).
HOP_KEY_WAIT = 30.0


def default_origins(config: Config, http_host: str, http_port: int) -> tuple[str, ...]:
    """The front door's own origin and the edge's HTTP origin (which serves the demo)."""
    envoy_host, envoy_port = checks.split_address(config.envoy.listen)  # checked with the configuration
    # A front door on a wildcard address is reached as localhost at least.
    envoy_host = envoy_host if origin_of(envoy_host, envoy_port) else "127.0.0.1"
    return (*origin_of(envoy_host, envoy_port), *origin_of(http_host, http_port))


@dataclass
class Edge:
    """A running edge. ``stop`` is idempotent."""

    ws_server: Server
    http: HttpPort
    keepalive: Keepalive | None
    client: CoreClient
    events: EventStreams
    ws_port: int
    http_port: int
    # /readyz: the link to the core, and the core's checks (health.py).
    readiness: Readiness | None = None
    tracing: traces.Tracing | None = None
    _stopped: bool = False

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return len(self.ws_server.connections)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        metrics.SOURCES.watch(None)
        # Close every socket with 1001 (going away), answer held polls now.
        self.ws_server.close()
        if self.keepalive is not None:
            self.keepalive.close()
        self.http.stop_polls()
        await self.ws_server.wait_closed()
        await self.http.close()
        await self.events.close()
        await self.client.close()
        if self.tracing is not None:
            # The spans of the last requests go out too.
            await asyncio.to_thread(self.tracing.close)


async def start_edge(config: Config, *, clock: Callable[[], float] = time.monotonic) -> Edge:
    """Connect to the core and start both servers on the configured addresses.
    ``clock``: the monotonic time of the sockets' and requests' rate limits
    (tests pass their own)."""
    edge = config.edge
    # Both checked with the configuration (port 0: any free port).
    ws_host, ws_port = checks.split_address(edge.listen, any_port=True)
    http_host, http_port = checks.split_address(edge.http_listen, any_port=True)

    # The core may write the hop key a moment after it starts (wac run).
    hop_key = await asyncio.to_thread(read_hop_key, config, HOP_KEY_WAIT)
    client = CoreClient(edge.core_address, deadline=edge.call_deadline, hop_key=hop_key)
    # None unless [tracing] otlp_endpoint is set: OpenTelemetry is not even loaded.
    tracing = traces.start(config.tracing, "wac-edge", config.cluster.node_id)
    dispatcher = Dispatcher(MethodTable.for_package(), client, tracing)
    ws_limits = WsLimits(
        max_batch=edge.max_batch,
        rate_per_second=edge.rate_per_second,
        rate_burst=edge.rate_burst,
        flood_close_after=edge.flood_close_after,
        send_queue=edge.send_queue,
        max_inflight=edge.max_inflight,
        send_queue_bytes=edge.send_queue_bytes,
        auth_deadline=edge.auth_deadline,
    )
    # One count for both adapters: an address's sockets and HTTP requests.
    slots = ConnectionSlots(edge.max_connections_per_address)
    # Filled in below once the HTTP port is bound (it may be port 0); no
    # connection is served before start_edge returns.
    origins = OriginPolicy(())
    gate = Admission(slots, origins, client.hop_key)
    readiness = Readiness(client)
    # One timer pings every socket (keepalive.py), not a task per socket.
    keepalive = Keepalive(edge.ping_interval, edge.ping_timeout or None) if edge.ping_interval else None
    ws_server = await ws_serve(
        make_handler(dispatcher, ws_limits, clock, keepalive=keepalive),
        ws_host,
        ws_port,
        # /healthz and /readyz first (health.py), then the upgrade's checks.
        process_request=with_probes(make_process_request(gate), readiness),
        # Frames are small JSON: compression would cost two zlib contexts
        # (tens of KiB) per connection for little gain.
        compression=None,
        max_size=edge.max_message_bytes,
        max_queue=MAX_QUEUE,
        write_limit=WRITE_LIMIT,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=CLOSE_TIMEOUT,
        # The upgrade's request (headers) and the handshake must be done in
        # header_timeout, as on the HTTP port: a slowloris holds no socket longer.
        open_timeout=edge.header_timeout,
        server_header=None,
    )
    http = HttpPort(functools.partial(_http_edge, edge, dispatcher, gate, clock))
    try:
        bound_http = await http.listen(http_host, http_port)
    except BaseException:
        ws_server.close()
        await ws_server.wait_closed()
        await dispatcher.events.close()
        await client.close()
        if tracing is not None:
            tracing.close()
        raise
    bound_ws = ws_server.sockets[0].getsockname()[1]
    gate.origins = OriginPolicy(edge.allowed_origins or default_origins(config, http_host, bound_http))
    log.info(
        "edge listening",
        extra={"websocket": f"{ws_host}:{bound_ws}", "http": f"{http_host}:{bound_http}", "core": edge.core_address},
    )
    started = Edge(ws_server, http, keepalive, client, dispatcher.events, bound_ws, bound_http, readiness, tracing)
    # Read at scrape time (one edge per process outside the tests).
    metrics.SOURCES.watch(started)
    return started


def _http_edge(edge: EdgeConfig, dispatcher: Dispatcher, gate: Admission, clock: Callable[[], float]) -> HttpEdge:
    """The HTTP adapter, built at the HTTP port's first connection: aiohttp loads here."""
    from edges.wapi.http import HttpEdge, HttpLimits

    return HttpEdge(
        dispatcher,
        HttpLimits(
            max_message_bytes=edge.max_message_bytes,
            max_batch=edge.max_batch,
            rate_per_second=edge.rate_per_second,
            rate_burst=edge.rate_burst,
            long_poll_seconds=edge.long_poll_seconds,
            header_timeout=edge.header_timeout,
        ),
        gate,
        sdk_dir=Path(edge.sdk_dir) if edge.sdk_dir else DEFAULT_SDK_DIR,
        demo_dir=Path(edge.demo_dir) if edge.demo_dir else DEFAULT_DEMO_DIR,
        clock=clock,
    )


async def _write_status(config: Config, edge: Edge) -> None:
    """This edge's part of ``wac status`` (settings/status.py), every few seconds."""
    started = time.time()
    ws_host = config.edge.listen.rsplit(":", 1)[0]
    http_host = config.edge.http_listen.rsplit(":", 1)[0]
    # wac cluster's edges share a data dir: the second and later by port.
    name = "edge" if edge.ws_port == _port(config.edge.listen) else f"edge-{edge.ws_port}"
    while True:
        checks = {} if edge.readiness is None else await edge.readiness.checks()
        document = {
            "pid": os.getpid(),
            "time": time.time(),
            "started": started,
            "listen": [f"{ws_host}:{edge.ws_port}", f"{http_host}:{edge.http_port}"],
            "core": edge.client.address,
            "sockets": edge.connections,
            "failed": {check: reason for check, reason in checks.items() if reason},
        }
        try:
            await asyncio.to_thread(status.write, config.data_dir, name, document)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)
        await asyncio.sleep(status.INTERVAL)


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


async def serve(config: Config) -> None:
    """Run the edge until SIGTERM or SIGINT, then close every socket with 1001."""
    if not log.isEnabledFor(logging.DEBUG):
        # websockets logs every connection at INFO: thousands of lines an
        # hour for nothing an operator acts on.
        logging.getLogger("websockets.server").setLevel(logging.WARNING)
    edge = await start_edge(config)
    metrics_listener = metrics.listen(config.edge.metrics_listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    collector = asyncio.create_task(collector_tend(), name="gc")
    writer = asyncio.create_task(_write_status(config, edge), name="status-file")
    await stop.wait()
    collector.cancel()
    writer.cancel()
    log.info("edge stopping")
    await edge.stop()
    if metrics_listener is not None:
        metrics_listener.close()
