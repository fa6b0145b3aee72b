"""Traces: the W3C trace context a request carries, and OpenTelemetry spans
exported over OTLP when ``[tracing] otlp_endpoint`` is set.

Off (the default), nothing of OpenTelemetry is imported and no span is
made. What remains is reading a ``traceparent`` a caller sent and passing
it on, so that every process's log lines of one request (cli/logs.py)
carry its trace id. On, ``Tracing`` makes one span per request in each
process (the edge, the core; Envoy makes its own), in the trace of the
caller's ``traceparent`` when there is one, and hands its own span on to
the next hop in the same header.

Shared by the core and the edge: the one place both read a traceparent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any
from urllib.parse import urlsplit

from settings.config import TracingConfig

log = logging.getLogger("wac.traces")

# The header (HTTP) and metadata key (gRPC) of W3C Trace Context.
TRACEPARENT = "traceparent"

# version-traceid-parentid-flags, lower-case hex; a future version may add
# fields after a dash (W3C Trace Context, section 3.2).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

# The trace id of the request this task serves, for its log lines ("" when none).
_current: ContextVar[str] = ContextVar("wac_trace_id", default="")


def trace_id_of(traceparent: str) -> str:
    """The trace id of a valid W3C traceparent, else "": W3C has a malformed
    one ignored (the request starts a trace of its own), not refused."""
    if not traceparent or len(traceparent) > 512:
        return ""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return ""
    version, trace, span, _flags, rest = match.groups()
    if version == "ff" or trace == _ZERO_TRACE or span == _ZERO_SPAN or (version == "00" and rest):
        return ""
    return trace


def current_trace_id() -> str:
    """The trace id of the request being served in this task, or ""."""
    return _current.get()


class Serving:
    """Tracing off: the request's log lines carry the trace id of the
    ``traceparent`` it came with (``with`` yields it, "" when none or
    malformed).

    A class, not a generator (nor OpenTelemetry's start_as_current_span): an exception leaving a generator-based
    context manager gets its __traceback__ set, which the edge's frozen
    RpcError refuses."""

    __slots__ = ("_token", "_trace")

    def __init__(self, traceparent: str) -> None:
        self._trace = trace_id_of(traceparent)
        self._token: Token[str] | None = None

    def __enter__(self) -> str:
        if self._trace:
            self._token = _current.set(self._trace)
        return self._trace

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)


class _Span:
    """One server span, current (as OpenTelemetry's context and for the log
    lines) from ``with`` to its end; a class for serving's reason."""

    __slots__ = ("_context_token", "_span", "_trace_token", "_tracing")

    def __init__(self, tracing: Tracing, span: Any) -> None:
        self._tracing = tracing
        self._span = span

    def __enter__(self) -> Any:
        tracing = self._tracing
        self._context_token = tracing.attach(tracing.set_span_in_context(self._span))
        self._trace_token = _current.set(format(self._span.get_span_context().trace_id, "032x"))
        return self._span

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._trace_token)
        self._tracing.detach(self._context_token)
        self._span.end()


class Tracing:
    """Spans of one process, exported over OTLP in the background.

    A bounded queue (the SDK's BatchSpanProcessor, 2048 spans) sits between
    the requests and the exporter: a collector that is slow or down costs
    dropped spans, never a request's time or unbounded memory.
    """

    def __init__(self, provider: Any, service: str) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("wac")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = StatusCode.ERROR
        self._status = Status
        self.service = service
        # What _Span needs of OpenTelemetry, looked up once.
        self.attach = context.attach
        self.detach = context.detach
        self.set_span_in_context = trace.set_span_in_context

    def span(self, name: str, traceparent: str, attributes: Mapping[str, str | int]) -> _Span:
        """A server span for one request, current for the code it runs, in
        the trace of ``traceparent`` when it is valid (else a new trace)."""
        parent = self._propagator.extract({TRACEPARENT: traceparent}) if traceparent else None
        span = self._tracer.start_span(name, context=parent, kind=self._server, attributes=attributes)
        return _Span(self, span)

    def fail(self, span: Any, description: str) -> None:
        """Mark ``span`` failed, with a description (never a secret)."""
        span.set_status(self._status(self._error, description))

    def traceparent(self) -> str:
        """The current span as a traceparent for the next hop ("" when none)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get(TRACEPARENT, "")

    def close(self) -> None:
        """Export what is queued (a few seconds at most), then stop."""
        self._provider.shutdown()


def start(config: TracingConfig, service: str, instance: str = "") -> Tracing | None:
    """The process's tracing, or None when ``[tracing] otlp_endpoint`` is empty.

    ``service`` is the OpenTelemetry service.name (wac-core, wac-edge),
    ``instance`` its service.instance.id (the cluster's node id).
    """
    if not config.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    endpoint = urlsplit(config.otlp_endpoint)
    attributes = {"service.name": service}
    if instance:
        attributes["service.instance.id"] = instance
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint.netloc, insecure=endpoint.scheme == "http", timeout=5)
    # Exported every second: a trace shows up while the operator still looks for it.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    log.info("%s traces exported to %s", service, config.otlp_endpoint)
    return Tracing(provider, service)
