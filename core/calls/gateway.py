"""Calls through the SIP gateway: wac's record of them, kept from the
gateway's dialog events, in the same history as the WAPI's calls.

wac does not signal these calls, it observes them: the gateway (Kamailio,
gateway/kamailio.cfg.tmpl) reports each call it relays when it is invited,
answered, ended or failed (connectors/kamailio_events.py reads the reports),
and this module turns them into call rows, in-call presence and operator
hangups. What it holds:

- A call is keyed by its SIP dialog (Call-ID and the caller's From tag)
  and gets a wac call id when first reported. Live calls are kept in memory
  (and in the store, reloaded by ``start()``); ended ones are in the store.
- Reports are applied one at a time, in arrival order, and are idempotent:
  a report for a call that already ended (an operator's hangup recorded
  first) or a repeated one changes nothing.
- A report missed while wac was not connected is recovered from the
  gateway's list of live dialogs (``reconcile``): a dialog wac did not know
  is adopted; a call wac holds that the gateway no longer does ends FAILED.
- A party that is not a subscriber (the trunk's side) is its URI:
  ``tel:+34911222333``. Only subscribers go into the in-call set.
- HangupCall: an operator (``calls.write``) or a party ends an answered
  call with BYE on both legs (``dlg.end_dlg``) or cancels a ringing one; the
  call ends OPERATOR (the operator's key name as ended_by) or as the party's
  hangup. A gateway that does not answer is UNAVAILABLE and the call stays.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from core import failures, metrics
from core.auth.principal import Principal, SubscriberPrincipal
from core.calls.incall import InCall
from core.calls.machine import CallInfo, CallState, EndReason, Media, Via, is_uri_callee
from core.calls.store import CallStore, CallWrite
from core.calls.writer import GroupWriter
from core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("wac.gateway")

# How many ended dialogs are remembered, so that a late report of one (its
# end after an operator's hangup was recorded) is not taken for a new call.
RECENTLY_ENDED = 4096
NOT_PARTICIPANT = "not a participant of this call"


class ReportKind(enum.Enum):
    """What the gateway reports of a call (the ``kind`` of its events)."""

    # An initial INVITE relayed: the call rings.
    INVITE = "invite"
    # The dialog is confirmed by a 200: the call is answered.
    ANSWER = "answer"
    # The dialog is over: a party's BYE, or the gateway ended it.
    END = "end"
    # No branch answered: the final status is ``code``.
    FAILED = "failed"
    # An INVITE to a subscriber with no registration: answered 404, no dialog.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class CallReport:
    """One report of a call from the gateway."""

    kind: ReportKind
    sip_call_id: str
    from_tag: str
    # A username, or the URI of the trunk's side.
    caller: str
    callee: str
    # The wac session whose token placed the call; "" from the trunk.
    caller_session: str
    video: bool
    # Unix seconds, the gateway's clock.
    at: float
    # The INVITE's CSeq number (cancelling a ringing call names it).
    cseq: int = 0
    # FAILED: the final SIP status the caller got.
    code: int = 0
    # END: the party whose BYE ended the call; "" when the gateway did.
    ended_by: str = ""


class GatewayError(Exception):
    """The gateway did not do what was asked (unreachable, refused)."""


class GatewayControl(Protocol):
    """What wac asks of the gateway: the vendor connector implements it."""

    async def end_call(self, sip_call_id: str, from_tag: str) -> None:
        """End an answered call: BYE to both legs."""
        ...

    async def cancel_call(self, sip_call_id: str, cseq: int) -> None:
        """Cancel a call still ringing: CANCEL to its branches."""
        ...


class Subscribers(Protocol):
    async def get_subscriber(self, username: str) -> object | None: ...


@dataclass(slots=True)
class _Live:
    call: CallInfo
    from_tag: str
    cseq: int
    # Set by a hangup in progress: how the call ends when the gateway's
    # report of its end (or the hangup itself) comes first.
    ending: tuple[EndReason, str] | None = None


# The history's reason for the final SIP status of a call that never started.
_FAILURE_REASONS: dict[int, EndReason] = {
    486: EndReason.BUSY,
    600: EndReason.BUSY,
    603: EndReason.REJECTED,
    487: EndReason.CANCELLED,
    408: EndReason.NO_ANSWER,
    404: EndReason.UNAVAILABLE,
    410: EndReason.UNAVAILABLE,
    480: EndReason.UNAVAILABLE,
    604: EndReason.UNAVAILABLE,
}


def failure_reason(code: int) -> EndReason:
    """The end reason for a call whose INVITE got the final status ``code``."""
    return _FAILURE_REASONS.get(code, EndReason.FAILED)


def _parties(call: CallInfo) -> tuple[str, ...]:
    return tuple(p for p in (call.caller, call.callee) if not is_uri_callee(p))


class GatewayCalls:
    """The calls through the SIP gateway. The composition root calls
    ``start()`` and ``stop()``; the connector feeds ``report()`` and
    ``reconcile()`` and is the ``control`` for hangups."""

    def __init__(
        self,
        *,
        store: CallStore,
        in_call: InCall,
        subscribers: Subscribers,
        control: GatewayControl | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._writer = GroupWriter(store)
        # The rows queued by the transitions under the lock, awaited after it.
        self._writes: list[asyncio.Future[None]] = []
        self._in_call = in_call
        self._subscribers = subscribers
        self._control = control
        self._clock = clock
        self._lock = asyncio.Lock()
        self._live: dict[tuple[str, str], _Live] = {}
        self._ids: dict[str, tuple[str, str]] = {}
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def start(self) -> None:
        """Reload the live calls a previous run left; reconcile() settles them."""
        for stored in await self._store.live_calls(Via.SIP):
            snapshot = stored.snapshot or {}
            from_tag, cseq = snapshot.get("fromTag"), snapshot.get("cseq", 0)
            if not isinstance(from_tag, str) or not isinstance(cseq, int):
                log.warning("gateway call %s has no dialog in its row; it stays as stored", stored.call.call_id)
                continue
            self._hold(_Live(stored.call, from_tag, cseq))
        if self._live:
            log.info("restored %d live gateway call(s)", len(self._live))

    async def stop(self) -> None:
        await self._writer.close()

    def live_by_state(self) -> dict[str, int]:
        """Live gateway calls by state, as ``CallHandler.live_by_state``
        (read on the metrics listener's thread; the copy is atomic)."""
        counts: dict[str, int] = {}
        for entry in list(self._live.values()):
            state = entry.call.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def holds(self, call_id: str) -> bool:
        """Whether call_id is a live call through the gateway."""
        return call_id in self._ids

    # -- reports --------------------------------------------------------
    async def report(self, report: CallReport) -> None:
        """Apply one report of the gateway; returns once its rows are committed.

        The commit is awaited outside the lock: the reports that queue
        behind this one meanwhile are applied and commit together in the
        next batch (writer.py), instead of one transaction each.
        """
        async with self._lock:
            await self._apply(report)
            writes = self._take_writes()
        await asyncio.gather(*writes)

    async def reconcile(self, live: Iterable[CallReport]) -> None:
        """The gateway's live dialogs (INVITE reports, ANSWER for answered
        ones), read when wac (re)connects: unknown ones are adopted, and the
        calls wac holds that are not among them have ended unseen."""
        async with self._lock:
            present: set[tuple[str, str]] = set()
            for report in live:
                present.add((report.sip_call_id, report.from_tag))
                if report.kind is ReportKind.ANSWER:
                    await self._apply(replace(report, kind=ReportKind.INVITE))
                await self._apply(report)
            for key, entry in tuple(self._live.items()):
                if key not in present:
                    self._end(
                        entry,
                        EndReason.FAILED,
                        "wac",
                        self._clock.time(),
                        "the gateway no longer has this call: it ended while wac was not listening",
                    )
            writes = self._take_writes()
        await asyncio.gather(*writes)

    async def _apply(self, report: CallReport) -> None:
        key = (report.sip_call_id, report.from_tag)
        if key in self._ended:
            return
        entry = self._live.get(key)
        match report.kind:
            case ReportKind.INVITE:
                if entry is None:
                    self._begin(report)
            case ReportKind.ANSWER:
                if entry is None:
                    entry = self._begin(report)
                if entry.call.state is CallState.RINGING:
                    self._answer(entry, report.at)
            case ReportKind.END:
                if entry is None:
                    log.debug("end of gateway call %s that wac never saw", report.sip_call_id)
                    return
                if report.ended_by:
                    reason, by, detail = EndReason.COMPLETED, report.ended_by, f"{report.ended_by} hung up"
                else:
                    reason, by, detail = EndReason.FAILED, "wac", "the gateway ended the call (timeout)"
                self._end(entry, reason, by, report.at, detail)
            case ReportKind.FAILED:
                if entry is None:
                    return
                reason = failure_reason(report.code)
                by = entry.call.caller if reason is EndReason.CANCELLED else entry.call.callee
                if reason in (EndReason.FAILED, EndReason.NO_ANSWER, EndReason.UNAVAILABLE):
                    by = "wac"
                self._end(entry, reason, by, report.at, f"SIP {report.code}")
            case ReportKind.UNREACHABLE:
                # As over the WAPI: a call to nobody is not a call; a call to
                # a subscriber who is not reachable is one, UNAVAILABLE.
                if entry is not None or await self._subscribers.get_subscriber(report.callee) is None:
                    return
                # Written ended at once: nobody ever sees it ringing.
                call = replace(
                    self._new_call(report),
                    state=CallState.ENDED,
                    end_time=report.at,
                    end_reason=EndReason.UNAVAILABLE,
                    ended_by="wac",
                    end_detail=f"SIP {report.code or 404}",
                )
                metrics.CALLS_PLACED.inc()
                metrics.CALL_ENDINGS_BY(EndReason.UNAVAILABLE.value).inc()
                self._write(CallWrite(call, None, new=True))
                self._remember_ended(key)

    def _begin(self, report: CallReport) -> _Live:
        call = self._new_call(report)
        metrics.CALLS_PLACED.inc()
        entry = _Live(call, report.from_tag, report.cseq)
        self._write(CallWrite(call, self._snapshot(entry), new=True))
        self._hold(entry)
        log.debug("gateway call %s %s -> %s", call.call_id, call.caller, call.callee)
        return entry

    @staticmethod
    def _new_call(report: CallReport) -> CallInfo:
        return CallInfo(
            call_id=secrets.token_urlsafe(16),
            caller=report.caller,
            caller_device=report.caller_session,
            callee=report.callee,
            state=CallState.RINGING,
            media=Media(audio=True, video=report.video),
            offered_devices=(),
            callee_device=None,
            create_time=report.at,
            answer_time=None,
            end_time=None,
            end_reason=None,
            ended_by=None,
            end_detail="",
            via=Via.SIP,
            sip_call_id=report.sip_call_id,
        )

    def _answer(self, entry: _Live, at: float) -> None:
        call = replace(entry.call, state=CallState.ACTIVE, answer_time=max(at, entry.call.create_time))
        metrics.CALL_SETUPS.inc()
        metrics.CALL_SETUP_DURATION.observe(max(0.0, at - entry.call.create_time))
        self._write(CallWrite(call, self._snapshot(entry)))
        entry.call = call
        self._in_call.add(call.call_id, *_parties(call))

    def _end(self, entry: _Live, reason: EndReason, by: str, at: float, detail: str) -> None:
        if entry.ending is not None:
            # A hangup asked for this end: it says why.
            reason, by = entry.ending
            detail = "ended through SAPI" if reason is EndReason.OPERATOR else f"{by} hung up through wac"
        was = entry.call
        call = replace(
            was,
            state=CallState.ENDED,
            end_time=max(at, was.answer_time or was.create_time),
            end_reason=reason,
            ended_by=by,
            end_detail=detail,
        )
        metrics.CALL_ENDINGS_BY(reason.value).inc()
        self._write(CallWrite(call, None))
        entry.call = call
        key = (was.sip_call_id, entry.from_tag)
        self._live.pop(key, None)
        self._ids.pop(was.call_id, None)
        self._remember_ended(key)
        if was.state is CallState.ACTIVE:
            self._in_call.remove(was.call_id, *_parties(was))
        log.debug("gateway call %s ended %s by %s", call.call_id, reason.value, by)

    def _write(self, write: CallWrite) -> None:
        self._writes.append(self._writer.submit(write))

    def _take_writes(self) -> list[asyncio.Future[None]]:
        writes, self._writes = self._writes, []
        return writes

    def _remember_ended(self, key: tuple[str, str]) -> None:
        self._ended[key] = None
        if len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)

    def _hold(self, entry: _Live) -> None:
        key = (entry.call.sip_call_id, entry.from_tag)
        self._live[key] = entry
        self._ids[entry.call.call_id] = key
        if entry.call.state is CallState.ACTIVE:
            self._in_call.add(entry.call.call_id, *_parties(entry.call))

    @staticmethod
    def _snapshot(entry: _Live) -> dict[str, object]:
        return {"fromTag": entry.from_tag, "cseq": entry.cseq}

    # -- hangup ---------------------------------------------------------
    async def hangup(self, who: Principal, call_id: str) -> CallInfo:
        """End a live gateway call for an operator (calls.write, checked by
        the caller) or one of its parties."""
        key = self._ids.get(call_id)
        entry = self._live.get(key) if key is not None else None
        if entry is None:
            stored = await self._store.get(call_id)
            if isinstance(who, SubscriberPrincipal) and (stored is None or not stored.call.is_party(who.username)):
                raise failures.PermissionDenied(NOT_PARTICIPANT)
            raise failures.FailedPrecondition("call has ended")
        call = entry.call
        if isinstance(who, SubscriberPrincipal):
            if not call.is_party(who.username):
                raise failures.PermissionDenied(NOT_PARTICIPANT)
            answered = call.state is CallState.ACTIVE
            ending = (EndReason.COMPLETED if answered else EndReason.CANCELLED, who.username)
        else:
            ending = (EndReason.OPERATOR, who.key_name)
        if self._control is None:
            raise failures.Unavailable("the SIP gateway's connector is not running")
        entry.ending = ending
        try:
            if call.state is CallState.ACTIVE:
                await self._control.end_call(call.sip_call_id, entry.from_tag)
            else:
                await self._control.cancel_call(call.sip_call_id, entry.cseq)
        except GatewayError as exc:
            entry.ending = None
            raise failures.Unavailable(f"the SIP gateway did not end the call: {exc}", retry_after=1.0) from None
        async with self._lock:
            if entry.call.state is not CallState.ENDED and key is not None and self._live.get(key) is entry:
                # The gateway's own report of the end may come later (or was
                # missed): the hangup is recorded now, the report ignored.
                self._end(entry, ending[0], ending[1], self._clock.time(), "")
            writes = self._take_writes()
        await asyncio.gather(*writes)
        # The end is read back at once (GET /sapi/v1/calls/{id}): committed,
        # whether the hangup or the gateway's report recorded it.
        await self._writer.settled()
        return entry.call
