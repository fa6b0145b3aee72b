"""The record of calls through the SIP gateway (core/calls/gateway.py) and
the reading of the gateway's reports (connectors/kamailio_events.py), on a
real SQLite store; tests/gateway/test_history.py runs them against Kamailio."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connectors.kamailio_events import ReportError, decode_report, read_netstring
from core import failures, metrics
from core.auth.principal import ServicePrincipal
from core.calls.gateway import CallReport, GatewayCalls, GatewayError, ReportKind, failure_reason
from core.calls.incall import InCall
from core.calls.machine import CallInfo, CallState, EndReason, Via
from core.calls.store import CallStore
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.work import dispose
from settings.config import sqlite_url
from tests.support.clock import FakeClock

NOW = 1_800_000_000.0


@dataclass
class Control:
    """The gateway side of a hangup: records what wac asked, or fails."""

    asked: list[tuple[str, ...]] = field(default_factory=list)
    fail: bool = False

    async def end_call(self, sip_call_id: str, from_tag: str) -> None:
        if self.fail:
            raise GatewayError("no answer")
        self.asked.append(("end", sip_call_id, from_tag))

    async def cancel_call(self, sip_call_id: str, cseq: int) -> None:
        self.asked.append(("cancel", sip_call_id, str(cseq)))


class People:
    async def get_subscriber(self, username: str) -> object | None:
        return object() if username in ("alice", "bob") else None


@dataclass
class Rig:
    calls: GatewayCalls
    store: CallStore
    control: Control
    told: list[tuple[str, bool]]
    in_call: InCall

    async def history(self, username: str) -> list[CallInfo]:
        return await self.store.list_calls(party=username, state=None, before=None, limit=50)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = sqlite_url(tmp_path)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    told: list[tuple[str, bool]] = []

    async def listener(username: str, in_call: bool) -> None:
        told.append((username, in_call))

    in_call = InCall(listener)
    in_call.start()
    control = Control()
    store = CallStore(engine)
    calls = GatewayCalls(store=store, in_call=in_call, subscribers=People(), control=control, clock=FakeClock(NOW + 60))
    await calls.start()
    try:
        yield Rig(calls, store, control, told, in_call)
    finally:
        await calls.stop()
        await in_call.stop()
        await dispose(engine)


def report(kind: ReportKind, at: float = NOW, *, call: str = "c1", **fields: Any) -> CallReport:
    base: dict[str, Any] = {
        "sip_call_id": call,
        "from_tag": "t1",
        "caller": "alice",
        "callee": "tel:+34911222333",
        "caller_session": "s1",
        "video": False,
        "cseq": 1,
    }
    return CallReport(kind=kind, at=at, **{**base, **fields})


async def test_a_call_s_reports_make_one_history_row_and_in_call_presence(rig: Rig) -> None:
    await rig.calls.report(report(ReportKind.INVITE))
    await rig.calls.report(report(ReportKind.INVITE))  # repeated: nothing new
    await rig.calls.report(report(ReportKind.ANSWER, NOW + 2))
    [call] = await rig.history("alice")
    assert (call.state, call.via, call.sip_call_id, call.callee) == (
        CallState.ACTIVE,
        Via.SIP,
        "c1",
        "tel:+34911222333",
    )
    assert rig.in_call.busy("alice") and not rig.in_call.busy("tel:+34911222333")
    await rig.calls.report(report(ReportKind.END, NOW + 10, ended_by="tel:+34911222333"))
    await rig.calls.report(report(ReportKind.END, NOW + 11, ended_by="alice"))  # late: ignored
    [call] = await rig.history("alice")
    assert (call.state, call.end_reason, call.ended_by) == (CallState.ENDED, EndReason.COMPLETED, "tel:+34911222333")
    assert (call.create_time, call.answer_time, call.end_time, call.duration) == (NOW, NOW + 2, NOW + 10, 8.0)
    await asyncio.wait_for(rig.in_call.stop(), 5)
    assert rig.told == [("alice", True), ("alice", False)]
    assert not rig.calls.holds(call.call_id)


@pytest.mark.parametrize(
    ("code", "reason", "by"),
    [
        (486, EndReason.BUSY, "bob"),
        (600, EndReason.BUSY, "bob"),
        (603, EndReason.REJECTED, "bob"),
        (487, EndReason.CANCELLED, "alice"),
        (408, EndReason.NO_ANSWER, "wac"),
        (480, EndReason.UNAVAILABLE, "wac"),
        (503, EndReason.FAILED, "wac"),
    ],
)
async def test_a_call_that_never_started_ends_with_the_reason_its_sip_status_says(
    rig: Rig, code: int, reason: EndReason, by: str
) -> None:
    assert failure_reason(code) is reason
    await rig.calls.report(report(ReportKind.INVITE, callee="bob"))
    await rig.calls.report(report(ReportKind.FAILED, NOW + 1, callee="bob", code=code))
    [call] = await rig.history("bob")
    assert (call.end_reason, call.ended_by, call.end_detail, call.duration) == (reason, by, f"SIP {code}", None)
    assert rig.told == []


async def test_an_unreachable_subscriber_s_call_is_recorded_and_nobody_s_is_not(rig: Rig) -> None:
    await rig.calls.report(report(ReportKind.UNREACHABLE, callee="bob", code=404))
    await rig.calls.report(report(ReportKind.UNREACHABLE, call="c2", callee="nobody", code=404))
    [call] = await rig.history("alice")
    assert (call.callee, call.state, call.end_reason) == ("bob", CallState.ENDED, EndReason.UNAVAILABLE)


async def test_reconcile_adopts_the_gateway_s_dialogs_and_ends_those_it_no_longer_has(rig: Rig) -> None:
    await rig.calls.report(report(ReportKind.INVITE, call="gone"))
    await rig.calls.report(report(ReportKind.ANSWER, call="gone"))
    # What dlg.list says on (re)connection: one answered call wac never saw.
    await rig.calls.reconcile([report(ReportKind.ANSWER, NOW + 5, call="unseen", callee="bob")])
    calls = {c.sip_call_id: c for c in await rig.history("alice")}
    assert calls["gone"].state is CallState.ENDED and calls["gone"].end_reason is EndReason.FAILED
    assert "no longer" in calls["gone"].end_detail
    assert calls["unseen"].state is CallState.ACTIVE and calls["unseen"].answer_time == NOW + 5
    assert rig.in_call.busy("bob") and rig.in_call.busy("alice")


async def test_a_restarted_core_reloads_live_gateway_calls(rig: Rig, tmp_path: Path) -> None:
    await rig.calls.report(report(ReportKind.INVITE))
    await rig.calls.report(report(ReportKind.ANSWER, NOW + 1))
    [call] = await rig.history("alice")
    again = GatewayCalls(store=rig.store, in_call=InCall(), subscribers=People(), control=rig.control)
    await again.start()
    assert again.holds(call.call_id)
    principal = ServicePrincipal(key_name="noc", scopes=frozenset({"calls.write"}))
    ended = await again.hangup(principal, call.call_id)
    assert (ended.end_reason, ended.ended_by) == (EndReason.OPERATOR, "noc")
    assert rig.control.asked == [("end", "c1", "t1")]
    await again.stop()


async def test_a_hangup_the_gateway_does_not_carry_out_leaves_the_call_up(rig: Rig) -> None:
    await rig.calls.report(report(ReportKind.INVITE))
    await rig.calls.report(report(ReportKind.ANSWER, NOW + 1))
    [call] = await rig.history("alice")
    rig.control.fail = True
    principal = ServicePrincipal(key_name="noc", scopes=frozenset({"calls.write"}))
    with pytest.raises(failures.Unavailable) as refused:
        await rig.calls.hangup(principal, call.call_id)
    assert "did not end the call" in refused.value.message
    assert rig.calls.holds(call.call_id)
    # The gateway's own end still comes as the party's hangup, not OPERATOR.
    await rig.calls.report(report(ReportKind.END, NOW + 9, ended_by="alice"))
    [call] = await rig.history("alice")
    assert (call.end_reason, call.ended_by) == (EndReason.COMPLETED, "alice")


GOOD = {
    "kind": "invite",
    "callId": "c1",
    "fromTag": "t1",
    "cseq": 1,
    "caller": "alice",
    "callee": "bob",
    "session": "s1",
    "video": 1,
    "code": 0,
    "endedBy": "",
    "at": "1800000000.25",
}


def test_a_report_as_the_script_writes_it_is_read() -> None:
    read = decode_report(json.dumps(GOOD).encode())
    assert (read.kind, read.sip_call_id, read.video, read.at) == (ReportKind.INVITE, "c1", True, 1800000000.25)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "transfer"},
        {"callId": ""},
        {"caller": 7},
        {"callee": "x" * 300},
        {"cseq": -1},
        {"code": "486"},
        {"video": True},
        {"at": "yesterday"},
    ],
)
def test_a_report_that_is_not_what_the_script_writes_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ReportError):
        decode_report(json.dumps({**GOOD, **change}).encode())
    with pytest.raises(ReportError):
        decode_report(b"[1, 2]")


async def stream(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_netstrings_are_read_and_anything_else_is_refused() -> None:
    reader = await stream(b"5:hello,2:ok,")
    assert [await read_netstring(reader), await read_netstring(reader)] == [b"hello", b"ok"]
    for bad in (b"abc:hello,", b"5:hello;", b"99999999:x,", b"20000:" + b"x" * 20001):
        with pytest.raises(ReportError):
            await read_netstring(await stream(bad))


async def test_a_gateway_call_counts_in_the_calls_metrics(rig: Rig) -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    names = (
        "wac_core_calls_placed_total",
        "wac_core_call_setups_total",
        "wac_core_call_setup_duration_seconds_count",
    )
    before = {name: sample(name) for name in names}
    completed = sample("wac_core_call_endings_total", reason="COMPLETED")
    await rig.calls.report(report(ReportKind.INVITE))
    assert rig.calls.live_by_state() == {"RINGING": 1}
    await rig.calls.report(report(ReportKind.ANSWER, NOW + 2))
    assert rig.calls.live_by_state() == {"ACTIVE": 1}
    await rig.calls.report(report(ReportKind.END, NOW + 10, ended_by="alice"))
    assert rig.calls.live_by_state() == {}
    assert {name: sample(name) - before[name] for name in names} == dict.fromkeys(names, 1)
    assert sample("wac_core_call_endings_total", reason="COMPLETED") - completed == 1
