"""The WAPI edge's Prometheus metrics: its registry, every metric object,
and the /metrics listener ([edge] metrics_listen).

The names are a public contract (dashboards and alerts are built on them,
deploy/grafana/wac.json among them): ``wac_edge_`` prefix, the unit in the
name, ``_total`` on counters. Rename one only as a breaking change.

Why module-level objects: a metric is a fact about this process, and
prometheus_client's objects are made for it. They live here, in one module,
with a registry of their own (not prometheus_client's global one), so that
/metrics shows exactly the edge's metrics and a core in the same process
(the tests) keeps its own. An edge does not fork workers: one registry per
process is the whole truth (no multiprocess mode is needed).

Costs on hot paths: a WAPI request updates one counter and one histogram
whose label children were resolved once (``MethodMetrics``). Nothing is
updated per delivered event: the edge counts its deliveries in a plain
integer (``EventStreams.delivered``) and what it holds anyway (sockets,
subscriptions, held polls) is read at scrape time by ``Sources``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edges.wapi import rpc
from settings import metrics_port
from settings.metrics_port import Listener

REGISTRY = CollectorRegistry()
# CPU seconds, resident memory, open file descriptors of the edge process.
ProcessCollector(registry=REGISTRY)

WAPI_REQUESTS = Counter(
    "wac_edge_wapi_requests_total",
    "WAPI JSON-RPC requests the edge answered from the core (WebSocket and HTTP), by method "
    "(Service.Method) and gRPC status code (OK, UNAUTHENTICATED, ...).",
    ["method", "code"],
    registry=REGISTRY,
)
WAPI_DURATION = Histogram(
    "wac_edge_wapi_request_duration_seconds",
    "Seconds from a WAPI request's call to the core to its result (a subscription: until the core accepted "
    "it), by method (Service.Method).",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
EVENT_DELIVERY_LAG = Histogram(
    "wac_edge_event_delivery_lag_seconds",
    "Seconds from an event's publication in the core to its being written to the edge's sockets "
    "(wall clocks of both). One observation per batch the core streams, for its first event, after the "
    "whole batch is passed on: the batch's longest lag, sampled, not every event's.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
WAPI_REFUSED = Counter(
    "wac_edge_wapi_refused_total",
    "WAPI JSON-RPC requests the edge answered itself with an error, never calling the core, by code: "
    "METHOD_NOT_FOUND, INVALID_PARAMS (a request the contract does not have), UNAUTHENTICATED (not "
    "logged in), INTERNAL_ERROR (an edge bug).",
    ["code"],
    registry=REGISTRY,
)
WEBSOCKET_CLOSES = Counter(
    "wac_edge_websocket_closes_total",
    "WebSockets closed, by close code (the edge's when it closed first, else the client's): 1000 normal, "
    "1001 going away, 1006 dropped without a close, "
    "1008 policy: flooding or a refused origin, 1009 message too big, 1011 internal error, "
    "4401 unauthenticated, 4408 send queue full; other: any other code.",
    ["code"],
    registry=REGISTRY,
)

# Seconds a scrape waits for the event loop to read its values.
SNAPSHOT_TIMEOUT = 5.0

# The close codes named in WEBSOCKET_CLOSES; any other (a client may send
# any code from 3000 to 4999) is "other", so that the label stays small.
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 4401, 4408})

OK = grpc.StatusCode.OK.name
# gRPC's statuses, and JSON-RPC's own errors, which the edge answers itself.
_STATUS_NAMES = {
    **{code.value[0]: code.name for code in grpc.StatusCode},
    rpc.PARSE_ERROR: "PARSE_ERROR",
    rpc.INVALID_REQUEST: "INVALID_REQUEST",
    rpc.METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    rpc.INVALID_PARAMS: "INVALID_PARAMS",
    rpc.INTERNAL_ERROR: "INTERNAL_ERROR",
    rpc.RATE_LIMITED: "RATE_LIMITED",
}


class MethodMetrics:
    """One WAPI method's counter and histogram, label children resolved once."""

    __slots__ = ("_by_code", "_duration", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._duration = WAPI_DURATION.labels(method)
        self._by_code: dict[str, Any] = {}

    def finished(self, code: str, seconds: float) -> None:
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = WAPI_REQUESTS.labels(self._method, code)
        counter.inc()
        self._duration.observe(seconds)


def status_name(code: int) -> str:
    """A JSON-RPC error's code (a gRPC status number, or JSON-RPC's own) as its name."""
    return _STATUS_NAMES.get(code, "UNKNOWN")


_closes: dict[str, Any] = {}


def websocket_closed(code: int | None) -> None:
    """Count one closed WebSocket by its close code (None: none received, 1006)."""
    label = "1006" if code is None else str(code) if code in KNOWN_CLOSE_CODES else "other"
    child = _closes.get(label)
    if child is None:
        child = _closes[label] = WEBSOCKET_CLOSES.labels(label)
    child.inc()


class _Events(Protocol):
    @property
    def subscriptions(self) -> int: ...
    @property
    def delivered(self) -> int: ...


class _Http(Protocol):
    @property
    def polls(self) -> int: ...


class Watched(Protocol):
    """What a scrape reads of a running edge (``server.Edge``)."""

    @property
    def connections(self) -> int: ...
    @property
    def events(self) -> _Events: ...
    @property
    def http(self) -> _Http: ...


class Sources(Collector):
    """What a scrape reads from state the edge keeps anyway: the running
    edge is watched from its start (``server.py``) to its stop.

    A scrape runs on the listener's thread, while the event loop changes
    the sockets' set: the values are read on the loop itself, between two
    of its callbacks, and the scrape waits for them.
    """

    def __init__(self) -> None:
        self._edge: Watched | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, edge: Watched | None) -> None:
        """Read ``edge`` from now on (called on its loop); None: nothing to read."""
        self._edge = edge
        self._loop = None if edge is None else asyncio.get_running_loop()

    def _read(self) -> tuple[int, int, int, int]:
        edge = self._edge
        if edge is None:
            return 0, 0, 0, 0
        return edge.connections, edge.events.subscriptions, edge.http.polls, edge.events.delivered

    def _snapshot(self) -> tuple[int, int, int, int]:
        loop = self._loop
        if loop is None or loop.is_closed():
            return 0, 0, 0, 0
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return self._read()
        read: concurrent.futures.Future[tuple[int, int, int, int]] = concurrent.futures.Future()

        def on_loop() -> None:
            try:
                read.set_result(self._read())
            except Exception as exc:  # pragma: no cover - reading lengths and integers
                read.set_exception(exc)

        loop.call_soon_threadsafe(on_loop)
        return read.result(timeout=SNAPSHOT_TIMEOUT)

    def collect(self) -> Iterable[Metric]:
        websockets, subscriptions, polls, delivered = self._snapshot()
        yield GaugeMetricFamily("wac_edge_websockets", "Open WAPI WebSocket connections.", value=websockets)
        yield GaugeMetricFamily(
            "wac_edge_event_subscriptions",
            "Sessions subscribed to their events through this edge (WebSockets and held HTTP long polls).",
            value=subscriptions,
        )
        yield GaugeMetricFamily(
            "wac_edge_http_polls", "HTTP-fallback long polls (GET /wapi/events) held open.", value=polls
        )
        yield CounterMetricFamily(
            "wac_edge_events_delivered",
            "Events the edge passed from the core to a subscribed socket or poll.",
            value=delivered,
        )

    def describe(self) -> Iterable[Metric]:
        # Registration describes the collector before any edge runs.
        edge, self._edge = self._edge, None
        try:
            return list(self.collect())
        finally:
            self._edge = edge


SOURCES = Sources()
REGISTRY.register(SOURCES)


def listen(address: str) -> Listener | None:
    """Serve the edge's /metrics on ``address``; None when it is empty (off)."""
    return metrics_port.listen(address, REGISTRY, "edge")
