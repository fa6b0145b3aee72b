"""The admission rules as pure code: connections per address, Origins."""

from __future__ import annotations

import pytest

from edges.wapi.admission import ConnectionSlots, OriginPolicy, origin_of


def test_slots_are_counted_per_address_and_given_back() -> None:
    slots = ConnectionSlots(2)
    assert slots.acquire("a") and slots.acquire("a")
    assert not slots.acquire("a")
    assert slots.acquire("b")
    slots.release("a")
    assert slots.held("a") == 1 and slots.acquire("a")
    for _ in range(2):
        slots.release("a")
    slots.release("b")
    # Nothing is kept for an address without connections.
    assert slots.held("a") == slots.held("b") == 0 and not slots._open


def test_slots_need_at_least_one() -> None:
    with pytest.raises(ValueError):
        ConnectionSlots(0)


def test_origins_compare_without_case_or_trailing_slash() -> None:
    policy = OriginPolicy(["https://Phone.example/"])
    assert policy.allows("https://phone.example")
    assert policy.allows(None)  # not a browser page
    assert not policy.allows("https://phone.example.evil.test")
    assert not policy.allows("null")  # a sandboxed or file: page
    assert OriginPolicy(["*"]).allows("https://anywhere.test")


def test_a_loopback_listener_is_reached_as_127_0_0_1_and_localhost() -> None:
    assert origin_of("127.0.0.1", 8080) == (
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    )
    assert origin_of("10.0.0.5", 8082) == ("http://10.0.0.5:8082",)
    assert origin_of("fd00::5", 8082) == ("http://[fd00::5]:8082",)
    assert origin_of("0.0.0.0", 8080) == ()
