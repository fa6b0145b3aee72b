"""grpc.health.v1 for the core, following its readiness (core/readiness.py).

Every service the core serves, and the server as a whole (service ""),
is SERVING while every readiness check passes and NOT_SERVING otherwise:
each service needs the database, so one status is the truth for all.
The checks run in the background every second; a Check answers from the
last result and never touches the database itself. Its trailing metadata
``wac-readiness`` names each check with its reason (JSON, an object of
name to reason, "" for a check that passed), so that the edge's /readyz can
say which failed and why. A stopping core is NOT_SERVING whatever its checks say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from grpc_health.v1 import health, health_pb2

from core.readiness import MAX_AGE, CheckResult, Readiness

log = logging.getLogger("wac.core")

# Trailing metadata of a Check: each check and its reason ("" when it passed).
READINESS_HEADER = "wac-readiness"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth(health.aio.HealthServicer):
    """The health servicer, its statuses kept to the readiness checks by ``run``."""

    def __init__(self, readiness: Readiness, services: Sequence[str]) -> None:
        super().__init__()
        self._readiness = readiness
        self._services = ("", *services)
        self._checks: dict[str, str] = {}
        self._ready: bool | None = None

    @property
    def checks(self) -> dict[str, str]:
        """Each check at the last evaluation, name to reason ("" when it passed)."""
        if self._gracefully_shutting_down:
            return {**self._checks, "core": "stopping"}
        return dict(self._checks)

    @property
    def failed(self) -> dict[str, str]:
        """The checks that failed at the last evaluation, name to reason."""
        return {name: reason for name, reason in self.checks.items() if reason}

    async def refresh(self) -> None:
        """Evaluate the checks and set every service's status from them."""
        results: tuple[CheckResult, ...] = await self._readiness.results()
        self._checks = {r.name: "" if r.ok else (r.reason or "failed") for r in results}
        ready = all(r.ok for r in results)
        if ready != self._ready:
            if ready:
                log.info("core ready")
            elif self._ready is None:
                # Starting before what it checks (Kamailio starts after the
                # core under wac run) is no fault: a warning is for losing it.
                log.info("core not ready yet", extra={"failed": self.failed})
            else:
                log.warning("core not ready", extra={"failed": self.failed})
            self._ready = ready
        for name in self._services:
            # Ignored once the server is stopping (enter_graceful_shutdown).
            await self.set(name, SERVING if ready else NOT_SERVING)

    async def run(self, interval: float = MAX_AGE) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("readiness refresh failed")

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        with contextlib.suppress(Exception):
            context.set_trailing_metadata(((READINESS_HEADER, json.dumps(self.checks)),))
        return await super().Check(request, context)
