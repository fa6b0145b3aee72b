"""The node's liveness and readiness over HTTP, answered by the edge on its
WebSocket port (Envoy routes the front door's ``/healthz`` and ``/readyz``
here), in Kubernetes' sense:

- ``GET /healthz``: this process is alive and its event loop turns. It
  asks nothing of anyone, so a core or database outage never makes an
  orchestrator restart a healthy edge. Always 200 ``{"status": "pass"}``.
- ``GET /readyz``: the node can serve now. 200 when every check passes,
  else 503; the body names each check (``edge``: connected to the core;
  ``core``: the core serves; and the core's own, ``database`` and, when
  configured, ``gateway``) with ``"pass"`` or ``"fail"`` and, when failing,
  an ``output`` saying why.

The edge asks the core's grpc.health.v1 ``Check`` over its one channel (the
one every call and event stream takes), whose trailing metadata carries the
core's checks (core/health.py). One question at a time, and its answer
reused for ``MAX_AGE`` seconds: a flood of probes costs the core at most
one Check a second. The bodies name no address, credential or stack trace.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from edges.wapi.core_client import CoreClient

log = logging.getLogger("wac.edge")

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
# Seconds an answer of the core is reused.
MAX_AGE = 1.0
# Seconds the core has to answer a Check.
CHECK_TIMEOUT = 1.0
# The core's trailing metadata with its checks (core/health.py).
READINESS_HEADER = "wac-readiness"
_CHECK_PATH = "/grpc.health.v1.Health/Check"

Report = dict[str, Any]


def report(checks: dict[str, str]) -> Report:
    """The readiness document from each check's reason ("" when it passed)."""
    body: Report = {"status": "pass" if not any(checks.values()) else "fail", "checks": {}}
    for name, reason in checks.items():
        body["checks"][name] = {"status": "fail", "output": reason} if reason else {"status": "pass"}
    return body


class Readiness:
    """The edge's readiness: its link to the core, and the core's own checks."""

    def __init__(
        self,
        client: CoreClient,
        *,
        max_age: float = MAX_AGE,
        timeout: float = CHECK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = client.channel.unary_unary(
            _CHECK_PATH,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self._last: dict[str, str] | None = None
        self._at = 0.0
        self._running: asyncio.Task[dict[str, str]] | None = None

    async def checks(self) -> dict[str, str]:
        """Each check, name to reason ("" when it passed), at most ``max_age`` s old."""
        if self._last is not None and self._clock() - self._at < self._max_age:
            return self._last
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._ask(), name="edge-readiness")
        return await asyncio.shield(self._running)

    async def _ask(self) -> dict[str, str]:
        call = self._check(health_pb2.HealthCheckRequest(service=""), timeout=self._timeout)
        try:
            answer = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            log.info("readiness: the core does not answer", extra={"code": exc.code().name, "detail": exc.details()})
            checks = {
                "edge": f"not connected to the core ({exc.code().name})",
                "core": "no answer to the edge",
            }
        else:
            checks = {"edge": "", "core": ""}
            checks.update(_core_checks(trailing))
            if answer.status != health_pb2.HealthCheckResponse.SERVING and not any(checks.values()):
                checks["core"] = f"not serving ({health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)})"
        self._last, self._at = checks, self._clock()
        return checks


def _core_checks(trailing: Any) -> dict[str, str]:
    for key, value in trailing or ():
        if key == READINESS_HEADER:
            try:
                decoded = json.loads(value)
            except ValueError:
                return {}
            if isinstance(decoded, dict):
                return {str(name): str(reason) for name, reason in decoded.items()}
    return {}


Base = Callable[[ServerConnection, HttpRequest], HttpResponse | None]


def with_probes(
    base: Base, readiness: Readiness
) -> Callable[[ServerConnection, HttpRequest], Awaitable[HttpResponse | None]]:
    """``base`` (the upgrade's checks), with /healthz and /readyz answered first."""

    async def process_request(connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        path = urlsplit(request.path).path
        if path == LIVENESS_PATH:
            return _json(connection, http.HTTPStatus.OK, {"status": "pass"})
        if path == READINESS_PATH:
            body = report(await readiness.checks())
            ok = body["status"] == "pass"
            return _json(connection, http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE, body)
        return base(connection, request)

    return process_request


def _json(connection: ServerConnection, status: http.HTTPStatus, body: Report) -> HttpResponse:
    response = connection.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response
