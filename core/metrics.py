"""The core's Prometheus metrics: its registry, every metric object, and
the /metrics listener ([core] metrics_listen).

The names are a public contract (dashboards and alerts are built on them,
deploy/grafana/wac.json among them): ``wac_core_`` prefix, the unit in the
name, ``_total`` on counters. Rename one only as a breaking change.

Why module-level objects: a metric is a fact about this process, not about
one handler, and prometheus_client's objects are made for it (thread-safe,
one per name). They live here, in one module, so that the rest of the core
imports the one object it updates and nothing else; the registry is this
module's own, not prometheus_client's global one, so that /metrics shows
exactly the core's metrics, and an edge in the same process (the tests)
keeps its own. A core does not fork workers, so one registry per process
is the whole truth (no multiprocess mode is needed).

Costs on hot paths: every update is one counter or histogram call on a
child whose labels were resolved once (``RpcMetrics``). What a scrape can
read from state already kept (live calls by state) is counted at scrape
time by ``Sources`` rather than on every transition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from settings import metrics_port
from settings.metrics_port import Listener

REGISTRY = CollectorRegistry()
# CPU seconds, resident memory, open file descriptors of the core process.
ProcessCollector(registry=REGISTRY)

# Seconds: from a fast call answered from memory (1 ms) to a deadline (10 s).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter(
    "wac_core_rpc_requests_total",
    "gRPC requests the core finished, by full method name and gRPC status code (OK, NOT_FOUND, ...).",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "wac_core_rpc_duration_seconds",
    "Seconds the core took to answer a unary gRPC request (streams are not timed), by full method name.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LOGINS = Counter(
    "wac_core_logins_total",
    "Login attempts by outcome: success, bad_credentials, throttled, disabled, invalid, error.",
    ["outcome"],
    registry=REGISTRY,
)
TOKEN_VERIFICATIONS = Counter(
    "wac_core_token_verifications_total",
    "Access tokens checked by VerifyToken (the SAPI's introspection), by result: active, or why not "
    "(expired, revoked, disabled, invalid_signature, malformed).",
    ["result"],
    registry=REGISTRY,
)
TOKEN_VERIFICATION_DURATION = Histogram(
    "wac_core_token_verification_duration_seconds",
    "Seconds VerifyToken took to check a token.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
    registry=REGISTRY,
)
SESSION_REVOCATIONS = Counter(
    "wac_core_session_revocations_total",
    "Sessions ended before their expiry, by reason (logout, revoked, disabled, deleted, password, reuse, ...).",
    ["reason"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "wac_core_events_published_total",
    "Events the core published to subscribers' event logs (one per event, however many sessions get it).",
    registry=REGISTRY,
)
CALLS_PLACED = Counter(
    "wac_core_calls_placed_total",
    "Calls created by CreateCall (those refused before they exist are not counted).",
    registry=REGISTRY,
)
CALL_SETUPS = Counter(
    "wac_core_call_setups_total",
    "Calls answered: set up from RINGING to ACTIVE.",
    registry=REGISTRY,
)
CALL_SETUP_DURATION = Histogram(
    "wac_core_call_setup_duration_seconds",
    "Seconds from a call's creation to its answer (ringing time included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
CALL_ENDINGS = Counter(
    "wac_core_call_endings_total",
    "Calls ended, by end reason (COMPLETED, REJECTED, BUSY, CANCELLED, NO_ANSWER, FAILED, UNAVAILABLE, ...).",
    ["reason"],
    registry=REGISTRY,
)
CONFERENCES_CREATED = Counter(
    "wac_core_conferences_created_total",
    "Conferences created (their room made on the media server).",
    registry=REGISTRY,
)
CONFERENCE_ENDINGS = Counter(
    "wac_core_conference_endings_total",
    "Conferences ended, by reason: CREATOR, OPERATOR, IDLE (the room stayed empty for the idle timeout).",
    ["reason"],
    registry=REGISTRY,
)
CONFERENCE_JOINS = Counter(
    "wac_core_conference_joins_total",
    "Participants entering a conference's room (a device joining again to refresh its tokens is not counted).",
    registry=REGISTRY,
)
CONFERENCE_LEAVES = Counter(
    "wac_core_conference_leaves_total",
    "Participants out of a conference's room, by reason: LEFT, KICKED, SESSION_ENDED, CONNECTION_LOST, MOVED "
    "(those in the room when it ends are not counted).",
    ["reason"],
    registry=REGISTRY,
)

CONNECTOR_RUNS = Counter(
    "wac_core_connector_runs_total",
    "Directory connector runs (LDAP, Google) finished by this core, by outcome: succeeded, failed.",
    ["outcome"],
    registry=REGISTRY,
)
CONNECTOR_RUN_DURATION = Histogram(
    "wac_core_connector_run_duration_seconds",
    "Seconds a directory connector run took, fetch and write, by outcome: succeeded, failed.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    registry=REGISTRY,
)

DB_STATEMENT_DURATION = Histogram(
    "wac_core_db_statement_duration_seconds",
    "Seconds each SQL statement took, from its execution to its result (waiting for the database "
    "included, the pool's checkout not).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)

LOGIN_THROTTLE_KEYS = Gauge(
    "wac_core_login_throttle_keys",
    "Login-throttle keys (a username, an address, or both) by state: throttled (attempts delayed), "
    "locked (attempts refused until the lock ends); counted at start and every minute.",
    ["state"],
    registry=REGISTRY,
)
DIRECTORY_ENTRIES = Gauge(
    "wac_core_directory_entries",
    "Entries in the directory (the subscribers' mirror and every connector's), as counted at most every minute.",
    registry=REGISTRY,
)
# How often a core counts the directory for DIRECTORY_ENTRIES: one COUNT(*)
# a minute, rather than a query on every scrape (scrapes run on a thread).
DIRECTORY_COUNT_SECONDS = 60.0


class Children:
    """A labelled metric's children, each resolved once: ``.labels`` hashes
    its values under a lock on every call, a dict lookup does not. Only
    for labels of a few known values (reasons, outcomes), never for
    anything a client chooses."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[str, Counter] = {}

    def __call__(self, value: str) -> Counter:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child


LOGINS_BY = Children(LOGINS)
TOKEN_VERIFICATIONS_BY = Children(TOKEN_VERIFICATIONS)
SESSION_REVOCATIONS_BY = Children(SESSION_REVOCATIONS)
CALL_ENDINGS_BY = Children(CALL_ENDINGS)
CONFERENCE_ENDINGS_BY = Children(CONFERENCE_ENDINGS)
CONFERENCE_LEAVES_BY = Children(CONFERENCE_LEAVES)


def connector_run(outcome: str, seconds: float) -> None:
    """A connector run finished (a few a minute at most: no children kept)."""
    CONNECTOR_RUNS.labels(outcome).inc()
    CONNECTOR_RUN_DURATION.labels(outcome).observe(seconds)


class RpcMetrics:
    """One method's request counter and latency histogram, with its label
    children resolved once (a ``.labels`` call hashes its labels under a
    lock: too much on every call)."""

    __slots__ = ("_by_code", "_duration", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._duration = RPC_DURATION.labels(method)
        self._by_code: dict[grpc.StatusCode | None, Any] = {}

    def finished(self, code: grpc.StatusCode | None, seconds: float | None) -> None:
        """A call ended with ``code`` (None: OK); ``seconds`` None for a stream."""
        counter = self._by_code.get(code)
        if counter is None:
            counter = RPC_REQUESTS.labels(self._method, (code or grpc.StatusCode.OK).name)
            self._by_code[code] = counter
        counter.inc()
        if seconds is not None:
            self._duration.observe(seconds)


class Sources(Collector):
    """Gauges read at scrape time from state the core keeps anyway.

    Each source returns its samples (label values to value); the running
    core sets them (``core/server.py``) and takes them back when it stops.
    A scrape runs on the listener's thread: a source must only read, and
    copy a container before iterating it (``list(d.values())`` is atomic
    under the GIL; iterating the dict itself could meet a change).
    """

    def __init__(self) -> None:
        self.calls_by_state: Callable[[], Mapping[str, int]] | None = None
        # The embedded event log only: Redis keeps a cluster's.
        self.events_retained: Callable[[], int] | None = None

    def collect(self) -> Iterable[Metric]:
        calls = GaugeMetricFamily(
            "wac_core_calls", "Live calls on this core, by state (RINGING, ACTIVE).", labels=["state"]
        )
        counts = self.calls_by_state() if self.calls_by_state is not None else {}
        for state in ("RINGING", "ACTIVE"):
            calls.add_metric([state], counts.get(state, 0))
        yield calls
        if self.events_retained is not None:
            yield GaugeMetricFamily(
                "wac_core_event_log_events",
                "Events the embedded event log keeps for sessions to resume from (every session's, "
                "within [events] retention); not served by a core in a cluster (Redis keeps them).",
                value=self.events_retained(),
            )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


SOURCES = Sources()
REGISTRY.register(SOURCES)


def listen(address: str) -> Listener | None:
    """Serve the core's /metrics on ``address``; None when it is empty (off)."""
    return metrics_port.listen(address, REGISTRY, "core")
