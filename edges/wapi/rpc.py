"""JSON-RPC 2.0 messages: parse and validate what a client sends, build what
the edge answers. Pure code: no I/O, no gRPC, no clock.

One incoming text (a WebSocket frame or an HTTP body) is a single message or
a batch. ``parse`` turns it into a ``Frame``: the requests to execute, in
order, and the errors already known (malformed items), each with the id to
answer. The adapters execute the requests and hand the replies back to
``Frame.response`` to get the text to send, or None when nothing is owed
(only notifications, or only client responses).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# The codes JSON-RPC 2.0 reserves, and the one server error the edge adds.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RATE_LIMITED = -32000

JsonId = str | int | float | None

# "traceparent" (W3C Trace Context, optional): the client's trace this
# request belongs to; an extension member of the WAPI beside JSON-RPC's own.
_REQUEST_MEMBERS = frozenset({"jsonrpc", "method", "params", "id", "traceparent"})
_RESPONSE_MEMBERS = frozenset({"jsonrpc", "result", "error", "id"})


@dataclass(frozen=True, slots=True)
class RpcError(Exception):
    """A JSON-RPC error object: a JSON-RPC code (negative) or a gRPC status number."""

    code: int
    message: str
    data: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = dict(self.data)
        return error


@dataclass(frozen=True, slots=True)
class Request:
    """One valid request, or a notification when ``notification`` is true."""

    method: str
    params: Mapping[str, Any]
    id: JsonId = None
    notification: bool = False
    # The request's W3C traceparent as sent ("" when absent); a malformed
    # one is ignored where it is read (settings/traces.parse), as W3C says.
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class Invalid:
    """An item that failed validation, answered with ``error`` under ``id``."""

    error: RpcError
    id: JsonId = None


Item = Request | Invalid


@dataclass(frozen=True, slots=True)
class Frame:
    """What one incoming text holds: its items, in order, and whether it was a batch."""

    items: tuple[Item, ...]
    batch: bool = False

    @property
    def requests(self) -> tuple[Request, ...]:
        return tuple(item for item in self.items if isinstance(item, Request))

    def response(self, replies: Mapping[int, dict[str, Any]]) -> str | None:
        """The text answering this frame.

        ``replies`` maps the index of a Request in ``items`` to its response
        object (from ``result`` or ``error``); a notification is never
        answered, whatever ``replies`` holds. Invalid items without a reply
        get their own error. Returns None when nothing is owed.
        """
        out: list[dict[str, Any]] = []
        for index, item in enumerate(self.items):
            if isinstance(item, Request) and item.notification:
                continue
            if index in replies:
                out.append(replies[index])
            elif isinstance(item, Invalid):
                out.append(error(item.id, item.error))
        if not out:
            return None
        return encode(out if self.batch else out[0])


class _NotJson(ValueError):
    """A text Python's json module reads but JSON does not allow."""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, whatever Python's json module accepts.
    raise _NotJson(f"{name} is not valid JSON")


# Answers name what is wrong with the JSON, never the parser's own limits
# (Python's messages for these mention its recursion and digit settings).
TOO_DEEP = "parse error: arrays and objects are nested too deeply"
TOO_LONG_NUMBER = "parse error: a number has too many digits"


# Built once: json.loads and json.dumps with options build a new one per call.
# They give the answers' exact text: orjson, several times faster, reads and
# writes what they do but for the few cases below, which go to them instead.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

# orjson reads an integer beyond 64 bits as a float; Python's json keeps it whole.
_LONG_DIGITS = re.compile(r"\d{19}")
# Floats below 1e-4 in magnitude, which orjson writes as 0.0000... or with a
# one-digit exponent (1e-7) where Python's repr writes 1e-05 and 1e-07.
_SMALL_FLOAT = re.compile(rb"0\.0000|\de-\d(?!\d)")


def _loads(text: str) -> Any:
    """The JSON value of ``text``, as ``_DECODER`` reads it; its errors too."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # NaN, a lone surrogate, 1e400, nesting beyond 1024...: Python's json says what is wrong
    return _DECODER.decode(text)


def parse(text: str | bytes, *, max_batch: int) -> Frame:
    """Parse and validate one incoming text.

    Never raises: every defect becomes an ``Invalid`` item carrying the
    precise JSON-RPC error, with the request's id when it could be read.
    A batch longer than ``max_batch`` (at least 1) is refused whole.
    """
    try:
        message = _loads(text if isinstance(text, str) else text.decode("utf-8"))
    except UnicodeDecodeError:
        return Frame((Invalid(RpcError(PARSE_ERROR, "parse error: the body is not UTF-8")),))
    except RecursionError:
        # Deeply nested arrays, which a 64 KiB frame can hold.
        return Frame((Invalid(RpcError(PARSE_ERROR, TOO_DEEP)),))
    except json.JSONDecodeError as exc:
        return Frame((Invalid(RpcError(PARSE_ERROR, f"parse error: {exc.msg} at character {exc.pos}")),))
    except _NotJson as exc:
        return Frame((Invalid(RpcError(PARSE_ERROR, f"parse error: {exc}")),))
    except ValueError:
        # The only other ValueError of the decoder: an integer longer than
        # the interpreter converts (int_max_str_digits).
        return Frame((Invalid(RpcError(PARSE_ERROR, TOO_LONG_NUMBER)),))
    try:
        return _frame(message, max_batch)
    except RecursionError:
        # Nesting the decoder took but validation, run deeper in the stack, did not.
        return Frame((Invalid(RpcError(PARSE_ERROR, TOO_DEEP)),))


def _frame(message: Any, max_batch: int) -> Frame:
    if isinstance(message, list):
        if not message:
            return Frame((Invalid(RpcError(INVALID_REQUEST, "invalid request: empty batch")),))
        if len(message) > max_batch:
            return Frame(
                (
                    Invalid(
                        RpcError(
                            INVALID_REQUEST,
                            f"invalid request: batch of {len(message)} requests; at most {max_batch} are allowed",
                        )
                    ),
                )
            )
        items = tuple(item for item in map(_item, message) if item is not None)
        return Frame(items, batch=True)
    item = _item(message)
    return Frame(() if item is None else (item,))


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def _item(message: Any) -> Item | None:
    """Validate one request object; None for a client's response (never answered)."""
    if not isinstance(message, dict):
        kind = type(message).__name__ if message is not None else "null"
        return Invalid(RpcError(INVALID_REQUEST, f"invalid request: expected an object, got {_json_kind(kind)}"))
    has_id = "id" in message
    request_id = message.get("id")
    if has_id and not _valid_id(request_id):
        return Invalid(RpcError(INVALID_REQUEST, "invalid request: id must be a string, a number or null"))
    if _is_response(message):
        # A response to a request of ours; the edge sends none, so there is
        # nothing to match it with, and answering a response could loop.
        return None
    if message.get("jsonrpc") != "2.0":
        if "jsonrpc" not in message:
            problem = 'missing "jsonrpc": "2.0"'
        else:
            problem = f'"jsonrpc" must be "2.0", got {json.dumps(message["jsonrpc"])[:40]}'
        return Invalid(RpcError(INVALID_REQUEST, f"invalid request: {problem}"), request_id)
    unknown = set(message) - _REQUEST_MEMBERS
    if unknown:
        names = ", ".join(sorted(f'"{name}"' for name in unknown))
        return Invalid(RpcError(INVALID_REQUEST, f"invalid request: unknown member {names}"), request_id)
    method = message.get("method")
    if method is None:
        return Invalid(RpcError(INVALID_REQUEST, 'invalid request: missing "method"'), request_id)
    if not isinstance(method, str) or not method:
        return Invalid(RpcError(INVALID_REQUEST, 'invalid request: "method" must be a non-empty string'), request_id)
    params = message.get("params", {})
    if isinstance(params, list):
        # Valid JSON-RPC, but a protobuf message has named fields only.
        return Invalid(
            RpcError(INVALID_PARAMS, "invalid params: params must be an object (by name), not an array"),
            request_id,
        )
    if not isinstance(params, dict):
        return Invalid(RpcError(INVALID_REQUEST, 'invalid request: "params" must be an object'), request_id)
    traceparent = message.get("traceparent", "")
    if not isinstance(traceparent, str):
        return Invalid(RpcError(INVALID_REQUEST, 'invalid request: "traceparent" must be a string'), request_id)
    return Request(method=method, params=params, id=request_id, notification=not has_id, traceparent=traceparent)


def _is_response(message: dict[str, Any]) -> bool:
    return (
        "method" not in message
        and ("result" in message or "error" in message)
        and set(message) <= _RESPONSE_MEMBERS
        and message.get("jsonrpc") == "2.0"
    )


def _json_kind(python_type: str) -> str:
    return {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean", "null": "null"}.get(
        python_type, python_type
    )


def result(request_id: JsonId, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: JsonId, failure: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": failure.to_json()}


def notification(method: str, params: Any) -> str:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def notification_text(method: str, params_json: str) -> str:
    """A notification whose params are already JSON text."""
    head = _NOTIFICATION_HEADS.get(method)
    if head is None:
        head = _NOTIFICATION_HEADS[method] = f'{{"jsonrpc":"2.0","method":{encode(method)},"params":'
    return head + params_json + "}"


# The text before the params, by method: a fan-out writes the same one to every socket.
_NOTIFICATION_HEADS: dict[str, str] = {}


def encode(value: Any) -> str:
    """Compact JSON, UTF-8 characters as they are.

    A float NaN or infinity is written null (Python's json wrote NaN, which
    is not JSON); none reaches here: ids are finite, proto3 JSON writes them
    as strings.
    """
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits, a lone surrogate, a key not a string, a
        # Mapping not a dict: Python's json writes them.
        return _ENCODER.encode(value)
    if _SMALL_FLOAT.search(text) is not None:
        return _ENCODER.encode(value)
    return text.decode()


def rate_limited(retry_after: float) -> RpcError:
    return RpcError(RATE_LIMITED, "rate limited", {"retryAfter": round(retry_after, 3)})
