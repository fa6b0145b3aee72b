"""An OTLP/gRPC collector for tests: it keeps every span it is sent in
memory, so that a test reads the traces Envoy, the edge and the core
exported, over the same protocol a real collector (Jaeger, Tempo, the
OpenTelemetry Collector) speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from tests.support.timing import seconds


@dataclass(frozen=True)
class Span:
    service: str  # its resource's service.name
    name: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_id: str  # "" for a trace's root
    attributes: dict[str, Any]
    failed: bool  # status ERROR
    status_message: str


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(items: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.endpoint = ""
        self._arrived = asyncio.Condition()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            failed=span.status.code == span.status.STATUS_CODE_ERROR,
                            status_message=span.status.message,
                        )
                    )
        async with self._arrived:
            self._arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def span(self, service: str, name: str, trace_id: str = "", timeout: float = 15) -> Span:
        """The first span ``service`` exported named ``name`` (in ``trace_id``
        when given), waiting for it: exporters send in batches, every second
        or so."""
        return await self._wait(
            lambda: next(
                (
                    s
                    for s in self.spans
                    if s.service == service and s.name == name and (not trace_id or s.trace_id == trace_id)
                ),
                None,
            ),
            timeout,
            f"no span {name!r} from {service} (trace {trace_id or 'any'}); got {self.names()}",
        )

    async def trace(self, trace_id: str, services: set[str], timeout: float = 15) -> list[Span]:
        """The spans of ``trace_id``, once each of ``services`` sent at least one."""

        def whole() -> list[Span] | None:
            spans = self.of(trace_id)
            return spans if {span.service for span in spans} >= services else None

        return await self._wait(
            whole,
            timeout,
            f"trace {trace_id} lacks spans of {services}: it has {[(s.service, s.name) for s in self.of(trace_id)]}",
        )

    def of(self, trace_id: str) -> list[Span]:
        return [span for span in self.spans if span.trace_id == trace_id]

    def names(self) -> list[tuple[str, str]]:
        return [(span.service, span.name) for span in self.spans]

    async def _wait(self, found: Any, timeout: float, failure: str) -> Any:
        try:
            async with asyncio.timeout(seconds(timeout)), self._arrived:
                while (result := found()) is None:
                    await self._arrived.wait()
                return result
        except TimeoutError:
            raise AssertionError(failure) from None


@asynccontextmanager
async def collector() -> AsyncIterator[Collector]:
    """A collector on a free 127.0.0.1 port; ``endpoint`` is its http:// URL."""
    received = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield received
    finally:
        await server.stop(grace=None)
