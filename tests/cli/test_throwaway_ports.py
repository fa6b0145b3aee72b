"""`wac cluster` plans its nodes' ports from a base: the base is chosen
below the kernel's ephemeral range, so no outgoing connection of the
cluster's own (to PostgreSQL, to Redis) can take a planned port before its
node listens on it."""

from __future__ import annotations

import socket

from cli.throwaway import _ephemeral_low, consecutive_free_ports


def test_the_base_is_below_the_ephemeral_range_and_every_port_is_free() -> None:
    low = _ephemeral_low()
    for _ in range(20):
        base = consecutive_free_ports(4)
        assert base >= 10_000 and base + 4 <= low, (base, low)
        for port in range(base, base + 4):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", port))
