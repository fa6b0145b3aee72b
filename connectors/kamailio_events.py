"""The gateway's call reports, read from Kamailio's evapi listener
(``[gateway] events_listen``, loopback only) into ``core.calls.gateway``.

Kamailio writes one JSON object per call event as a netstring
(``<length>:<json>,``; gateway/kamailio.cfg.tmpl, route[CALL_EVENT]) to
every connected client, and drops them while none is connected. So each
(re)connection first reads Kamailio's live dialogs (``dlg.list``) and
reconciles wac's record with them, then applies the reports in the order
they come. A report that is not what the script writes is logged and
skipped; a stream that is not netstrings is dropped and reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from connectors.kamailio import KamailioError, KamailioRpc
from core.calls.gateway import CallReport, GatewayCalls, ReportKind

log = logging.getLogger("wac.gateway")

# A report is a few hundred bytes; a length beyond this is not one.
MAX_REPORT_BYTES = 16 * 1024
MAX_TEXT = 256
# Reports applied and waiting for their rows to commit, at most.
MAX_IN_FLIGHT = 512


class ReportError(ValueError):
    """A report that is not what the gateway's script writes."""


def decode_report(data: bytes) -> CallReport:
    """One report's JSON, checked; ReportError otherwise."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise ReportError("not JSON") from None
    if not isinstance(raw, dict):
        raise ReportError("not a JSON object")

    def text(key: str, *, required: bool = True) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value):
            raise ReportError(f"{key} is not a string of 1 to {MAX_TEXT} characters")
        return value

    def number(key: str) -> int:
        value = raw.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ReportError(f"{key} is not a non-negative integer")
        return value

    try:
        kind = ReportKind(raw.get("kind"))
    except ValueError:
        raise ReportError(f"unknown kind {raw.get('kind')!r}") from None
    try:
        at = float(text("at"))
    except ValueError:
        raise ReportError("at is not a time") from None
    return CallReport(
        kind=kind,
        sip_call_id=text("callId"),
        from_tag=text("fromTag"),
        caller=text("caller"),
        callee=text("callee"),
        caller_session=text("session", required=False),
        video=number("video") == 1,
        at=at,
        cseq=number("cseq"),
        code=number("code"),
        ended_by=text("endedBy", required=False),
    )


async def read_netstring(reader: asyncio.StreamReader) -> bytes:
    """The next netstring's payload; ReportError if the stream is not netstrings."""
    head = await reader.readuntil(b":")
    digits = head[:-1]
    if not digits.isdigit() or len(digits) > 6:
        raise ReportError("not a netstring length")
    length = int(digits)
    if length > MAX_REPORT_BYTES:
        raise ReportError(f"a report of {length} bytes")
    payload = await reader.readexactly(length + 1)
    if payload[-1:] != b",":
        raise ReportError("a netstring without its closing comma")
    return payload[:-1]


class KamailioCallEvents:
    """Keeps one connection to Kamailio's evapi listener and feeds its
    reports to ``calls``. ``run()`` runs until cancelled; ``connected``
    is set while a reconciled connection is reading."""

    def __init__(
        self,
        listen: str,
        rpc: KamailioRpc,
        calls: GatewayCalls,
        *,
        first_delay: float = 0.1,
        # Short: reports made while wac is not connected are dropped.
        max_delay: float = 1.0,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._host, self._port = host, int(port)
        self._rpc = rpc
        self._calls = calls
        self._first_delay = first_delay
        self._max_delay = max_delay
        self.connected = asyncio.Event()

    async def run(self) -> None:
        delay = self._first_delay
        # Said once per outage (a gateway starting after the core is normal;
        # a JSON-RPC listener that is down must not flood the log), then quiet
        # until a connection has been read again.
        quiet = False
        while True:
            problem = await self._connect_and_read()
            if problem is None:
                quiet, delay = False, self._first_delay
            else:
                level, what = problem
                log.log(logging.DEBUG if quiet else level, "gateway call events %s: retrying", what)
                quiet = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _connect_and_read(self) -> tuple[int, str] | None:
        """One connection: reconcile, then read until it ends. What went
        wrong (with the level to say it at), or None when a reconciled
        connection was read and closed."""
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            # INFO: the core usually starts before the gateway.
            return logging.INFO, f"not readable yet ({exc})"
        try:
            await self._reconcile()
            log.info("reading the gateway's call events from %s:%d", self._host, self._port)
            self.connected.set()
            await self._read(reader)
            log.warning("the gateway closed its call events: reconnecting")
            return None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return logging.WARNING, f"lost ({type(exc).__name__})"
        except ReportError as exc:
            return logging.WARNING, f"not netstrings ({exc})"
        except KamailioError as exc:
            return logging.WARNING, f"unusable: Kamailio's dialogs not readable ({exc})"
        finally:
            self.connected.clear()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reconcile(self) -> None:
        reports = [r for r in (d.report() for d in await self._rpc.dialogs()) if r is not None]
        await self._calls.reconcile(reports)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        # Reports are applied in order, each in a task of its own: a report
        # does not wait for the one before it to commit, so the rows of
        # reports that come together commit in one batch. At most
        # MAX_IN_FLIGHT wait for their commit; beyond, reading waits
        # (Kamailio's socket buffer holds the rest).
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    data = await read_netstring(reader)
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        return  # closed between reports
                    raise
                try:
                    report = decode_report(data)
                except ReportError as exc:
                    log.warning("gateway call report skipped: %s", exc)
                    continue
                task = asyncio.create_task(self._record(report), name="gateway-call-report")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # What was read is recorded before the connection is given up.
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _record(self, report: CallReport) -> None:
        try:
            await self._calls.report(report)
        except Exception:
            # One report wac could not record (its database failing) must
            # not stop the others.
            log.exception("gateway call report %s of %s not recorded", report.kind.value, report.sip_call_id)
