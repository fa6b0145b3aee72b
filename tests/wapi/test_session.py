"""edges.wapi.session: the binding, the rate limiter and the session, fed
frames, events and ``now`` directly: no socket, no core, no clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edges.wapi import rpc
from edges.wapi.methods import MethodTable, to_json
from edges.wapi.rpc import RpcError
from edges.wapi.session import (
    CLOSE_UNAUTHENTICATED,
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    TOO_SLOW,
    Binding,
    Close,
    Exchange,
    RateLimiter,
    Session,
    SessionLimits,
    Verdict,
    token_refused,
)
from wac.v1 import events_pb2, presence_pb2

TABLE = MethodTable.for_package()


def verdicts(limiter: RateLimiter, times: list[float]) -> list[str]:
    return [limiter.check(t).verdict.value[0] for t in times]


def test_burst_then_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3, flood_after=100, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "a", "r"]
    assert limiter.check(0.0).retry_after == pytest.approx(0.5)
    assert verdicts(limiter, [0.5, 0.5]) == ["a", "r"]
    assert verdicts(limiter, [10.0] * 4) == ["a", "a", "a", "r"]  # refills to burst, no further


def test_flood_closes_after_consecutive_rejections() -> None:
    limiter = RateLimiter(rate=1, burst=2, flood_after=3, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "r", "r"]
    # An admitted request in between does not forgive a sustained flood.
    assert verdicts(limiter, [1.0, 1.0]) == ["a", "c"]


def test_a_pause_that_refills_the_bucket_forgives() -> None:
    limiter = RateLimiter(rate=1, burst=2, flood_after=3, now=0.0)
    assert verdicts(limiter, [0, 0, 0, 0]) == ["a", "a", "r", "r"]
    assert verdicts(limiter, [5, 5, 5, 5]) == ["a", "a", "r", "r"]
    assert limiter.check(5).verdict is Verdict.CLOSE


def test_clock_going_backwards_is_harmless() -> None:
    limiter = RateLimiter(rate=1, burst=1, flood_after=10, now=10.0)
    assert verdicts(limiter, [10, 5, 10.5, 11]) == ["a", "r", "r", "a"]


@pytest.mark.parametrize("bad", [{"rate": 0}, {"burst": 0}, {"flood_after": 0}])
def test_bounds(bad: dict[str, float]) -> None:
    options = {"rate": 1.0, "burst": 1, "flood_after": 1, "now": 0.0, **bad}
    with pytest.raises(ValueError):
        RateLimiter(**options)  # type: ignore[arg-type]


def test_binding() -> None:
    login = TABLE.get("IdentityService.Login")
    get = TABLE.get("IdentityService.GetSubscriber")
    assert login and get
    binding = Binding("")
    assert not binding.bound
    assert binding.credential_for(login, hint="h") is None
    with pytest.raises(RpcError) as raised:
        binding.credential_for(get, hint="log in first")
    assert raised.value.code == 16 and raised.value.message == "not logged in: log in first"
    binding.bind({"accessToken": "t1", "sessionId": "s1"})
    assert binding.credential_for(get, hint="h") == "t1"
    assert binding.credential_for(login, hint="h") is None  # a dead token never blocks a fresh login
    binding.bind({"accessToken": "t2", "sessionId": "s1"})
    assert binding.token == "t2"
    binding.bind({})  # not a session: ignored
    assert binding.token == "t2"


def test_token_refused_only_when_the_call_carried_the_token() -> None:
    unauthenticated = RpcError(16, "revoked")
    assert token_refused(unauthenticated, "t")
    assert not token_refused(unauthenticated, None)
    assert not token_refused(RpcError(7, "denied"), "t")


# -- the session: frames, events and now in; replies, notifications and closes out --
LIMITS = SessionLimits(max_batch=10, send_queue=2, send_queue_bytes=1 << 20, auth_deadline=10.0)


def make_session(
    token: str | None = None,
    *,
    limits: SessionLimits = LIMITS,
    rate: float = 100.0,
    burst: int = 100,
    flood_after: int = 3,
    backed_up: bool = False,
    streams_refused: str | None = None,
) -> Session:
    return Session(
        limits,
        binding=Binding(token),
        limiter=RateLimiter(rate=rate, burst=burst, flood_after=flood_after, now=0.0),
        hint="log in",
        now=0.0,
        streams_refused=streams_refused,
        backed_up=lambda: backed_up,
    )


def request(method: str, request_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def sent(session: Session) -> list[Any]:
    """Everything the adapter would send, in order: decoded texts and Closes."""
    out: list[Any] = []
    while (item := session.next_out()) is not None:
        out.append(item if isinstance(item, Close) else json.loads(item))
    return out


def test_a_request_is_handed_out_then_answered() -> None:
    session = make_session("t1")
    exchange = session.receive_text(json.dumps(request("IdentityService.GetSubscriber", 7, username="a")), 0.0)
    assert exchange is not None and [(i, r.method) for i, r in exchange.requests] == [
        (0, "IdentityService.GetSubscriber")
    ]
    index, item = exchange.requests[0]
    method = TABLE.get(item.method)
    assert method is not None and session.credential_for(method) == "t1"
    session.succeeded(exchange, index, item, {"username": "a"})
    assert session.auth_due is None  # the core accepted the token
    assert not session.outbox
    session.finish(exchange)
    assert sent(session) == [{"jsonrpc": "2.0", "id": 7, "result": {"username": "a"}}]


def test_frames_answered_without_the_core() -> None:
    session = make_session()
    assert session.receive_text("{oops", 0.0) is None
    assert (
        session.receive_text(json.dumps({"jsonrpc": "2.0", "method": "X.Y"}), 0.0) is not None
    )  # executed, unanswered
    session.receive_binary(0.0)
    parse, binary = sent(session)
    assert parse["error"]["code"] == rpc.PARSE_ERROR
    assert binary["error"]["code"] == rpc.INVALID_REQUEST and "binary" in binary["error"]["message"]


def test_unbound_and_streams_refused() -> None:
    get = TABLE.get("IdentityService.GetSubscriber")
    subscribe = TABLE.get("EventsService.Subscribe")
    assert get and subscribe
    with pytest.raises(RpcError) as raised:
        make_session().credential_for(get)
    assert raised.value.code == 16 and raised.value.data == {"status": "UNAUTHENTICATED", "reason": "NOT_LOGGED_IN"}
    assert make_session("t").credential_for(subscribe) == "t"
    with pytest.raises(RpcError) as raised:
        make_session(streams_refused="long-poll instead").credential_for(subscribe)
    assert raised.value.code == rpc.METHOD_NOT_FOUND
    assert raised.value.message == "EventsService.Subscribe is a stream; long-poll instead"


def test_login_binds_the_connection() -> None:
    session = make_session()
    exchange = session.receive_text(json.dumps(request("IdentityService.Login", 1, username="a")), 0.0)
    assert exchange is not None
    index, item = exchange.requests[0]
    session.opened(exchange, index, item, {"accessToken": "fresh", "sessionId": "s1"})
    session.finish(exchange)
    assert session.binding.token == "fresh" and session.binding.session_id == "s1"
    assert session.auth_due is None
    assert sent(session)[0]["result"]["accessToken"] == "fresh"


def test_rate_limit_then_flood_aborts() -> None:
    session = make_session(rate=1, burst=2, flood_after=2)
    batch = [request("No.Such", n) for n in range(3)]
    exchange = session.receive_text(json.dumps(batch), 0.0)
    assert exchange is not None and [i for i, _ in exchange.requests] == [0, 1]
    for index, item in exchange.requests:
        session.failed(exchange, index, item, RpcError(rpc.METHOD_NOT_FOUND, "no"), None)
    session.finish(exchange)
    replies = sent(session)[0]
    assert [r["error"]["code"] for r in replies] == [-32601, -32601, rpc.RATE_LIMITED]
    assert replies[2]["error"]["data"]["retryAfter"] == pytest.approx(1.0)
    session.send("queued")
    assert session.receive_text(json.dumps(request("No.Such")), 0.0) is None
    assert session.abort == Close(POLICY_VIOLATION, "flood: too many requests")
    assert session.closing and not session.outbox  # what was queued is dropped
    session.send("after")
    assert not session.outbox


def test_a_refused_token_answers_then_closes_4401() -> None:
    session = make_session("dead")
    exchange = session.receive_text(json.dumps(request("IdentityService.GetSubscriber")), 0.0)
    assert exchange is not None
    index, item = exchange.requests[0]
    session.failed(exchange, index, item, RpcError(16, "revoked"), "dead")
    assert session.closing and session.farewell is None  # not before the answer is queued
    session.finish(exchange)
    assert session.farewell == Close(CLOSE_UNAUTHENTICATED, "unauthenticated: the session's token was refused")
    session.send("an answer still in flight")
    session.queue_farewell()
    session.send("too late")
    out: list[str | Close] = []
    while (thing := session.next_out()) is not None:
        out.append(thing)
    assert isinstance(out[0], str) and json.loads(out[0])["error"]["code"] == 16
    assert out[1:] == ["an answer still in flight", session.farewell]


def test_a_wrong_password_is_no_close() -> None:
    session = make_session()
    exchange = session.receive_text(json.dumps(request("IdentityService.Login")), 0.0)
    assert exchange is not None
    index, item = exchange.requests[0]
    session.failed(exchange, index, item, RpcError(16, "wrong password"), None)
    session.finish(exchange)
    assert not session.closing and session.farewell is None


def test_auth_deadline_with_one_extension_for_a_pending_login() -> None:
    session = make_session()
    assert session.tick(4.0) == pytest.approx(6.0)
    assert session.tick(10.0, login_pending=True) == pytest.approx(10.0)  # once
    assert session.farewell is None
    assert session.tick(20.0, login_pending=True) is None
    assert session.farewell == Close(CLOSE_UNAUTHENTICATED, "unauthenticated: no login within 10 s")
    authenticated = make_session()
    authenticated.opened(Exchange(rpc.parse("[]", max_batch=1), {}, []), 0, rpc.Request("m", {}, 1), {})
    assert authenticated.tick(100.0) is None and authenticated.farewell is None
    untimed = make_session(limits=SessionLimits(max_batch=1))
    assert untimed.tick(1e9) is None and untimed.farewell is None


def event(seq: int, **fields: Any) -> events_pb2.Event:
    return events_pb2.Event(seq=seq, **fields)


def test_events_become_notifications_until_the_session_is_revoked() -> None:
    session = make_session("t")
    presence = event(1, presence_changed=presence_pb2.Presence(username="bob"))
    assert session.event(presence) is False
    revoked = event(2, session_revoked=events_pb2.SessionRevoked(session_id="s", reason="logout"))
    assert session.event(revoked) is True
    assert session.event(event(3)) is False  # closing: nothing more
    session.queue_farewell()
    first, second, close = sent(session)
    assert first == {"jsonrpc": "2.0", "method": "event", "params": json.loads(rpc.encode(to_json(presence)))}
    assert second["params"]["sessionRevoked"] == {"sessionId": "s", "reason": "logout"}
    assert close == Close(CLOSE_UNAUTHENTICATED, "unauthenticated: the session was revoked")


@pytest.mark.parametrize(
    ("failure", "close"),
    [
        (None, Close(CLOSE_UNAUTHENTICATED, "unauthenticated: the session ended")),
        (RpcError(16, "expired"), Close(CLOSE_UNAUTHENTICATED, "unauthenticated: the session ended")),
        (RpcError(14, "core gone"), Close(INTERNAL_ERROR, "event stream failed: core gone")),
    ],
)
def test_stream_end_closes(failure: RpcError | None, close: Close) -> None:
    session = make_session("t")
    session.stream_ended(failure)
    assert session.farewell == close and session.closing


def test_a_long_close_reason_is_cut_to_123_bytes() -> None:
    session = make_session("t")
    session.stream_ended(RpcError(14, "é" * 200))
    assert session.farewell is not None
    assert len(session.farewell.reason.encode()) <= 123 and session.farewell.reason.endswith("...")


def test_a_burst_beyond_the_outbox_keeps_send_queue_then_4408() -> None:
    session = make_session("t")  # send_queue 2, BURST 4: 8 may wait while the transport drains
    for n in range(9):
        session.send(f"m{n}")
    assert session.close_queued and session.closing and session.abort is None
    assert list(session.outbox) == ["m0", "m1", Close(TOO_SLOW, "too much at once: reconnect and resume")]
    assert session.queued_bytes == 4
    session.send("more")
    assert len(session.outbox) == 3


def test_a_backed_up_client_beyond_the_outbox_is_aborted_4408() -> None:
    session = make_session("t", backed_up=True)
    session.send("m0")
    session.send("m1")
    assert session.abort is None and session.queued_bytes == 4
    session.send("m2")
    assert session.abort == Close(TOO_SLOW, "too slow to read: send queue full; reconnect and resume")
    assert not session.outbox and session.queued_bytes == 0


def test_the_outbox_counts_utf8_bytes() -> None:
    limits = SessionLimits(max_batch=1, send_queue=100, send_queue_bytes=6)
    session = make_session("t", limits=limits, backed_up=True)
    session.send("ééé")  # 6 bytes
    assert session.queued_bytes == 6 and session.abort is None
    session.send("x")
    assert session.abort is not None and session.abort.code == TOO_SLOW


def test_ending_is_idempotent_and_the_first_end_wins() -> None:
    session = make_session("t")
    session.close_after_send(INTERNAL_ERROR, "first")
    session.close_after_send(CLOSE_UNAUTHENTICATED, "second")
    assert session.farewell == Close(INTERNAL_ERROR, "first")
    session.queue_farewell()
    session.queue_farewell()
    assert list(session.outbox) == [Close(INTERNAL_ERROR, "first")]
    session.closed()
    assert session.closing and session.auth_due is None
