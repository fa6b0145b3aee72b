"""Call rates on native gRPC: a token bucket per caller, in bounded memory.

Pure: takes ``now`` and answers; the interceptor adapts it to the wire. The
WAPI edge limits each socket the same way (edges/wapi/session.py), so a
subscriber gets the same allowance over either way in.
"""

from __future__ import annotations

from collections import OrderedDict


class RateTable:
    """``burst`` calls at once, then ``rate`` per second, for each key.

    At most ``max_keys`` buckets are kept: the one used least recently is
    forgotten first (a forgotten caller starts again with a full bucket, so
    evading the limit that way takes ``max_keys`` identities at once).
    A ``rate`` of 0 admits everything and keeps nothing.
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, *, rate: float, burst: int, max_keys: int = 100_000) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be >= 0, burst and max_keys >= 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_keys = max_keys
        # key -> (tokens, stamp); ordered from least to most recently used.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float | None:
        """Account for one call by ``key`` at ``now``: None when admitted,
        else the seconds until the next call would be."""
        if self._rate == 0:
            return None
        buckets = self._buckets
        entry = buckets.get(key)
        if entry is None:
            tokens = self._burst
            if len(buckets) >= self._max_keys:
                buckets.popitem(last=False)
        else:
            stored, stamp = entry
            tokens = min(self._burst, stored + max(0.0, now - stamp) * self._rate)
            buckets.move_to_end(key)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return None
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate
