"""Which client address to believe: a forwarded one only from a trusted hop.

Envoy sets ``X-Forwarded-For`` to the browser's address and proves it is
Envoy with ``x-wac-hop: <hop key>``. Anyone else who reaches the edge's
ports directly could write any address there and so dodge the core's
per-address login throttle; their own peer address is used instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

HOP_HEADER = "x-wac-hop"
FORWARDED_HEADER = "x-forwarded-for"


def header(headers: Mapping[str, str], name: str) -> str:
    """``name`` from ``headers`` whatever its case (aiohttp's and websockets'
    mappings are case-insensitive already; a plain dict may not be)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value or ""


def is_hop(presented: str, hop_key: str) -> bool:
    """True when ``presented`` is the hop key. Constant-time; an empty hop
    key (none configured) trusts nobody."""
    if not hop_key or not presented:
        return False
    return hmac.compare_digest(presented.encode(), hop_key.encode())


def client_address(peer_host: str, headers: Mapping[str, str], hop_key: str) -> str:
    """The client's address: the last X-Forwarded-For entry when the request
    carries the hop key, else the peer's own address.

    The last entry is the one the trusted hop added (Envoy overwrites the
    header with its own peer; a proxy that appends puts its peer last);
    entries before it were written by whoever sent the request.
    """
    if is_hop(header(headers, HOP_HEADER), hop_key):
        forwarded = header(headers, FORWARDED_HEADER).rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return peer_host
