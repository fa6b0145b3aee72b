"""edges.wapi.rpc reads and writes JSON with orjson, to the same values and
text as Python's json module, whose answers the edge gave before."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from edges.wapi import rpc

_STDLIB_DECODER = json.JSONDecoder(parse_constant=rpc._reject_constant)
_STDLIB_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _read(reader: Any, text: str) -> object:
    try:
        return repr(reader(text))
    except RecursionError:
        return "too deep"
    except ValueError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize(
    "text",
    [
        "1e400",
        "-1e400",
        "NaN",
        "[-Infinity]",
        '"\\ud800"',
        '"\\ud83d\\ude00"',
        "123456789012345678901234567890",
        "18446744073709551615",
        "-9223372036854775809",
        "1" * 5000,
        "-0",
        '{"a":1,"a":2}',
        '"a\x01"',
        "[1,]",
        "\ufeff{}",
        " {} \n",
        "[" * 3000 + "]" * 3000,
        '{"id":1.0,"x":0.30000000000000004}',
    ],
)
def test_reads_what_json_reads(text: str) -> None:
    assert _read(rpc._loads, text) == _read(_STDLIB_DECODER.decode, text)


def test_reads_random_texts_as_json_does() -> None:
    rng = random.Random(7)
    alphabet = [*'{}[]",:0123456789.eE+- \t\n\\u/abfnrtlsx', "true", "null", "NaN", "1e400", "\x01", "é", "\\ud83d"]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert _read(rpc._loads, text) == _read(_STDLIB_DECODER.decode, text), text


@pytest.mark.parametrize(
    "value",
    [
        1e-7,
        1e-5,
        -2.775411931247677e-05,
        1e16,
        1.5e300,
        0.001,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**30,
        '\x00\x1f\x7f\u2028é"\\/\U0001f600',
        "\ud800",
        {1: 2},
        {"a": [1, 2.5, None, True, {"b": "c"}]},
    ],
)
def test_writes_what_json_writes(value: Any) -> None:
    assert rpc.encode(value) == _STDLIB_ENCODER.encode(value)
