"""Page tokens without a server: what decode_token accepts and refuses."""

from __future__ import annotations

import base64

import grpc
import pytest

from core import errors, failures, paging


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_a_token_round_trips() -> None:
    position = ["fp", 1, "Ángel", 42]
    assert paging.decode_token(paging.encode_token(position)) == position
    assert paging.decode_token("") is None


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "%%%",
        _b64("[" * 100_000),  # far beyond the size bound: refused before decoding
        _b64("[" * 1_500),  # within the bound, deeper than the JSON decoder's recursion limit
        _b64('{"a":' * 1_000),
        _b64("\xff"),
        "A" * (paging.MAX_TOKEN_CHARS + 1),
    ],
    ids=["not-base64", "percent", "nested-100000", "nested-1500", "nested-objects", "not-utf8", "too-long"],
)
def test_a_malformed_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(failures.Invalid) as err:
        paging.decode_token(token)
    assert errors.from_failure(err.value).code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.field == "page_token"
    assert err.value.message == "page_token: is not a page token this method returned"
