"""edges.wapi.rpc: pure parsing and building of JSON-RPC 2.0 messages."""

from __future__ import annotations

import json

import pytest

from edges.wapi import rpc
from edges.wapi.rpc import Invalid, Request, RpcError

NOT_AN_OBJECT = "invalid request: expected an object, got a number"


def only(text: str) -> rpc.Item:
    frame = rpc.parse(text, max_batch=3)
    assert not frame.batch and len(frame.items) == 1
    return frame.items[0]


def test_request_and_notification() -> None:
    assert only('{"jsonrpc":"2.0","id":7,"method":"A.B","params":{"x":1}}') == Request("A.B", {"x": 1}, 7)
    assert only('{"jsonrpc":"2.0","method":"A.B"}') == Request("A.B", {}, None, notification=True)
    # id null is a request (answered with id null), not a notification
    assert only('{"jsonrpc":"2.0","id":null,"method":"A.B"}') == Request("A.B", {}, None)
    assert only('{"jsonrpc":"2.0","id":"x","method":"A.B"}').id == "x"
    assert only('{"jsonrpc":"2.0","id":1.5,"method":"A.B"}').id == 1.5


@pytest.mark.parametrize(
    ("text", "code", "request_id"),
    [
        ("{", rpc.PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":"A.B","params":{"x":Infinity}}', rpc.PARSE_ERROR, None),
        ("[" * 100_000, rpc.PARSE_ERROR, None),
        ("[]", rpc.INVALID_REQUEST, None),
        ("[1,2,3,4]", rpc.INVALID_REQUEST, None),
        ("null", rpc.INVALID_REQUEST, None),
        ('{"id":1,"method":"A.B"}', rpc.INVALID_REQUEST, 1),
        ('{"jsonrpc":2.0,"id":1,"method":"A.B"}', rpc.INVALID_REQUEST, 1),
        ('{"jsonrpc":"2.0","id":2}', rpc.INVALID_REQUEST, 2),
        ('{"jsonrpc":"2.0","id":3,"method":""}', rpc.INVALID_REQUEST, 3),
        ('{"jsonrpc":"2.0","id":4,"method":"A.B","params":3}', rpc.INVALID_REQUEST, 4),
        ('{"jsonrpc":"2.0","id":5,"method":"A.B","params":[]}', rpc.INVALID_PARAMS, 5),
        ('{"jsonrpc":"2.0","id":{},"method":"A.B"}', rpc.INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":false,"method":"A.B"}', rpc.INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":6,"method":"A.B","meta":1}', rpc.INVALID_REQUEST, 6),
    ],
)
def test_each_defect_has_its_error(text: str, code: int, request_id: object) -> None:
    item = only(text)
    assert isinstance(item, Invalid)
    assert item.error.code == code
    assert item.id == request_id


def test_batch_keeps_order_and_answers_invalid_items() -> None:
    frame = rpc.parse('[{"jsonrpc":"2.0","id":1,"method":"A.B"}, 5, {"jsonrpc":"2.0","method":"C.D"}]', max_batch=3)
    assert frame.batch
    assert [type(item) for item in frame.items] == [Request, Invalid, Request]
    text = frame.response({0: rpc.result(1, {"ok": True}), 2: rpc.result(None, {})})
    assert json.loads(text or "") == [
        {"jsonrpc": "2.0", "id": 1, "result": {"ok": True}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": NOT_AN_OBJECT}},
    ]


def test_nothing_is_owed_for_notifications_and_client_responses() -> None:
    frame = rpc.parse('[{"jsonrpc":"2.0","method":"A.B"},{"jsonrpc":"2.0","id":9,"result":{}}]', max_batch=3)
    assert frame.response({0: rpc.result(None, {})}) is None
    assert rpc.parse('{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":"x"}}', max_batch=1).items == ()


def test_single_reply_is_not_wrapped() -> None:
    frame = rpc.parse('{"jsonrpc":"2.0","id":1,"method":"A.B"}', max_batch=1)
    assert json.loads(frame.response({0: rpc.error(1, RpcError(5, "gone", {"status": "NOT_FOUND"}))}) or "") == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 5, "message": "gone", "data": {"status": "NOT_FOUND"}},
    }


def test_builders() -> None:
    assert json.loads(rpc.notification("event", {"seq": "1"})) == {
        "jsonrpc": "2.0",
        "method": "event",
        "params": {"seq": "1"},
    }
    assert rpc.rate_limited(0.25).to_json() == {"code": -32000, "message": "rate limited", "data": {"retryAfter": 0.25}}
    assert "é" in rpc.encode({"x": "é"})  # UTF-8 on the wire, not \\u escapes
