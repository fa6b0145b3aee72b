"""The admission rules as pure code: connections per address, Origins, the attach window."""

from __future__ import annotations

import pytest

from edges.wapi.admission import AttachWindow, ConnectionSlots, OriginPolicy, origin_of


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


def test_the_attach_window_admits_up_to_its_limit_then_in_arrival_order() -> None:
    window: AttachWindow[str] = AttachWindow(2)
    assert window.enter("a") and window.enter("b")
    assert not window.enter("c") and not window.enter("d") and not window.enter("e")
    assert window.waiting == 3
    window.forget("d")  # gave up before its turn
    # Each answer hands its place on, first come first served.
    assert window.leave() == "c"
    assert window.leave() == "e"
    assert (window.admitted, window.waiting) == (2, 0)
    assert window.leave() is None and window.leave() is None
    assert window.admitted == 0
    # Empty again: admitted at once, and a waiter never jumps the queue.
    assert window.enter("f")
    window.forget("f")  # no longer queued (its turn came): nothing to forget
    assert window.admitted == 1


def test_the_attach_window_needs_room_for_one() -> None:
    with pytest.raises(ValueError):
        AttachWindow(0)
