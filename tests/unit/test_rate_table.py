"""The token buckets of native gRPC calls (core/auth/rates.py), with a fake clock."""

from __future__ import annotations

import pytest

from core.auth.rates import RateTable


def test_a_burst_then_the_rate_with_the_wait_until_the_next_token() -> None:
    table = RateTable(rate=2, burst=3)
    assert [table.take("a", 0.0) for _ in range(3)] == [None, None, None]
    assert table.take("a", 0.0) == pytest.approx(0.5)
    assert table.take("a", 0.25) == pytest.approx(0.25)
    assert table.take("a", 0.5) is None
    # Keys are independent.
    assert table.take("b", 0.5) is None


def test_memory_is_bounded_by_forgetting_the_least_recent_key() -> None:
    table = RateTable(rate=1, burst=1, max_keys=2)
    assert table.take("a", 0.0) is None
    assert table.take("b", 0.0) is None
    assert table.take("a", 0.0) is not None  # a used last now
    assert table.take("c", 0.0) is None  # b, the least recent, is forgotten
    assert len(table) == 2
    assert table.take("a", 0.0) is not None  # a was kept, still empty


def test_a_rate_of_zero_admits_everything_and_keeps_nothing() -> None:
    table = RateTable(rate=0, burst=1)
    assert all(table.take("a", 0.0) is None for _ in range(1000))
    assert len(table) == 0
