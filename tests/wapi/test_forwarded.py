"""Which client address the edge believes (issue 14, item 12)."""

from __future__ import annotations

from edges.wapi.forwarded import client_address, is_hop

HOP = "wac_0123456789abcdef_secret"


def test_without_the_hop_key_the_peer_is_the_client() -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    assert client_address("198.51.100.7", spoofed, HOP) == "198.51.100.7"
    assert client_address("198.51.100.7", {**spoofed, "x-wac-hop": "wac_0123456789abcdef_guess"}, HOP) == "198.51.100.7"


def test_with_the_hop_key_the_last_forwarded_entry_is_the_client() -> None:
    headers = {"x-forwarded-for": "203.0.113.9, 192.0.2.1", "X-Wac-Hop": HOP}
    assert client_address("127.0.0.1", headers, HOP) == "192.0.2.1"
    assert client_address("127.0.0.1", {"x-wac-hop": HOP}, HOP) == "127.0.0.1"


def test_no_configured_hop_key_trusts_nobody() -> None:
    assert client_address("127.0.0.1", {"x-forwarded-for": "203.0.113.9", "x-wac-hop": ""}, "") == "127.0.0.1"
    assert not is_hop("", "")
