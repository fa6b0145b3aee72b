"""Phone number normalisation and prefix-search keys."""

from __future__ import annotations

import pytest

from core.phones import InvalidPhoneNumber, normalize_e164, query_digits, search_keys


@pytest.mark.parametrize(
    "raw",
    [
        "+34 600 11 12 22",
        "+34600111222",
        "600111222",
        "600 11 12 22",
        "600-111-222",
        "(600) 111-222",
        "0034600111222",
        "0034 600 111 222",
        "tel:+34600111222",
        "  +34 600111222  ",
    ],
)
def test_normalize_spanish_forms(raw: str) -> None:
    assert normalize_e164(raw) == "+34600111222"


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("020 7946 0018", "GB", "+442079460018"),
        ("+44 20 7946 0018", "ES", "+442079460018"),
        ("(202) 555-0143", "US", "+12025550143"),
        ("011 34 600 111 222", "US", "+34600111222"),
        ("06 1234 5678", "IT", "+390612345678"),
        ("600111222", "es", "+34600111222"),
    ],
)
def test_normalize_other_regions(raw: str, region: str, e164: str) -> None:
    assert normalize_e164(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "'' is empty"),
        ("   ", "'   ' is empty"),
        ("hello", "'hello' is not a phone number"),
        ("123", "'123' is too short for ES"),
        (
            "020 7946 0018",
            "'020 7946 0018' is too long for ES; numbers of other countries need a + and their country code",
        ),
        ("+34 123", "'+34 123' is too short"),
        ("+999 600111222", "'+999 600111222' has an unknown or missing country code"),
        ("+1 200 555 0100", "'+1 200 555 0100' is not a valid number for country code +1"),
        ("1" * 300, f"{'1' * 40 + '...'!r} is too long"),
    ],
)
def test_invalid_numbers_are_refused_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as raised:
        normalize_e164(raw)
    assert str(raised.value) == message
    assert raised.value.raw == raw


def test_invalid_phone_number_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalize_e164("nope")


def test_an_unknown_default_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown default region 'XX'") as raised:
        normalize_e164("600111222", "XX")
    assert not isinstance(raised.value, InvalidPhoneNumber)
    with pytest.raises(ValueError, match="unknown default region"):
        query_digits("600", "ZZ")


# --- Search keys. --------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "keys"),
    [
        ("+34600111222", ["+34600111222", "34600111222", "600111222"]),
        ("+442079460018", ["+442079460018", "442079460018", "2079460018"]),
        ("+390612345678", ["+390612345678", "390612345678", "0612345678"]),
    ],
)
def test_search_keys(e164: str, keys: list[str]) -> None:
    assert search_keys(e164) == keys


@pytest.mark.parametrize("raw", ["600111222", "+34 600 111 222", "", "+34abc"])
def test_search_keys_need_e164(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"is not in E\.164 form"):
        search_keys(raw)


# --- Query digits. -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "region", "prefixes"),
    [
        ("600 11", "ES", ["60011"]),
        ("+34600 11", "ES", ["3460011"]),
        ("+34 600-11", "ES", ["3460011"]),
        ("(+34) 600", "ES", ["34600"]),
        ("0034 600", "ES", ["34600"]),
        ("34 600", "ES", ["34600"]),
        ("00", "ES", []),
        ("0", "ES", ["0"]),
        ("020 79", "GB", ["02079", "2079"]),
        ("011 34 600", "US", ["34600"]),
        ("1 202 555", "US", ["1202555", "202555"]),
        ("8 916 123", "RU", ["8916123", "916123"]),
        ("06 1234", "IT", ["061234"]),
    ],
)
def test_query_digits(query: str, region: str, prefixes: list[str]) -> None:
    assert query_digits(query, region) == prefixes


@pytest.mark.parametrize("query", ["alice", "600a", "6+00", "", "  ", "+", "()", "bob 600"])
def test_queries_that_are_not_phone_like_give_no_prefixes(query: str) -> None:
    assert query_digits(query) == []


def _finds(query: str, e164: str, region: str = "ES") -> bool:
    keys = search_keys(e164)
    return any(key.startswith(p) for key in keys for p in query_digits(query, region))


@pytest.mark.parametrize(
    "query",
    ["600 11", "+34600 11", "0034 600", "600111222", "+34 600 111 222", "34600", "(600) 111"],
)
def test_common_queries_find_the_number(query: str) -> None:
    assert _finds(query, "+34600111222")


@pytest.mark.parametrize("query", ["+33600", "0033 600", "601", "+34 601"])
def test_other_numbers_do_not_match(query: str) -> None:
    assert not _finds(query, "+34600111222")


def test_a_uk_national_query_finds_a_uk_number() -> None:
    assert _finds("020 7946", "+442079460018", "GB")
    assert _finds("+44 20 79", "+442079460018", "GB")
    assert _finds("0044 20", "+442079460018", "ES")
