"""core/readiness.py: probes bounded in time and in number, reasons fit for anyone to read."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2

from core.db.migrate import alembic_config
from core.health import NOT_SERVING, SERVING, ReadinessHealth
from core.readiness import NotReady, Readiness, head_revision


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Context:
    """The part of a grpc.aio servicer context that a health Check uses."""

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = metadata

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def test_the_head_revision_is_alembics() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused"))
    assert head_revision() == script.get_current_head()


async def test_results_are_reused_for_max_age_and_asked_once_at_a_time() -> None:
    clock = Clock()
    asked = 0

    async def database() -> None:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.01)

    readiness = Readiness([("database", database)], max_age=1.0, clock=clock)
    first = await asyncio.gather(*(readiness.results() for _ in range(20)))
    assert asked == 1 and all(result[0].ok for result in first)
    clock.now = 0.9
    await readiness.results()
    assert asked == 1
    clock.now = 1.1
    await readiness.results()
    assert asked == 2


async def test_a_failing_slow_or_broken_probe_names_its_check() -> None:
    async def unreachable() -> None:
        raise NotReady("unreachable (ConnectionRefusedError)")

    async def slow() -> None:
        await asyncio.sleep(5)

    async def broken() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret")

    async def fine() -> None:
        return None

    readiness = Readiness(
        [("database", unreachable), ("gateway", slow), ("other", broken), ("fine", fine)], timeout=0.05
    )
    results = {result.name: result for result in await readiness.results()}
    assert results["database"].reason == "unreachable (ConnectionRefusedError)"
    assert results["gateway"].reason == "no answer within 0.05 s"
    # What an unexpected error says stays in the log.
    assert results["other"].reason == "the check failed (see the core's log)"
    assert results["fine"].ok and not any(results[name].ok for name in ("database", "gateway", "other"))


async def test_a_core_starting_unready_says_so_quietly_and_warns_when_it_loses_readiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = False

    async def gateway() -> None:
        if not up:
            raise NotReady("Kamailio does not answer")

    clock = Clock()
    health = ReadinessHealth(Readiness([("gateway", gateway)], max_age=1.0, clock=clock), ["wac.v1.CallsService"])
    caplog.set_level(logging.INFO, logger="wac.core")

    async def status() -> int:
        request = health_pb2.HealthCheckRequest(service="wac.v1.CallsService")
        return (await health.Check(request, Context())).status

    # Starting before the gateway: not ready, but no warning.
    await health.refresh()
    assert await status() == NOT_SERVING
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "core not ready yet")]
    caplog.clear()
    up, clock.now = True, 1.0
    await health.refresh()
    assert await status() == SERVING
    up, clock.now = False, 2.0
    await health.refresh()
    assert await status() == NOT_SERVING
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "core ready"),
        (logging.WARNING, "core not ready"),
    ]
