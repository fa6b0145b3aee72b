"""Which client address the edge believes, and the core believes from the
edge (issue 14, item 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edges.wapi.core_client import CoreClient, call_metadata
from edges.wapi.forwarded import client_address, is_hop
from edges.wapi.methods import MethodTable
from edges.wapi.rpc import RpcError
from tests.support.core import running_core
from wac.v1 import identity_pb2

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


# The fourth failed login from one address within the delay is refused.
THROTTLE = {"WAC_IDENTITY_THROTTLE_AFTER": "3", "WAC_IDENTITY_THROTTLE_DELAY": "30", "WAC_IDENTITY_LOCK_AFTER": "1000"}


async def failed_login_codes(client: CoreClient, addresses: list[str]) -> list[str]:
    login = MethodTable.for_package().get("IdentityService.Login")
    assert login is not None
    codes = []
    for n, address in enumerate(addresses):
        request = identity_pb2.LoginRequest(username=f"nobody{n}", password="wrong password", device_name="t")
        with pytest.raises(RpcError) as failed:
            await client.call(login, request, call_metadata(None, address))
        codes.append(failed.value.data["status"])
    return codes


@pytest.mark.parametrize("with_hop_key", [True, False])
async def test_the_core_believes_the_address_the_edge_forwards_only_with_the_hop_key(
    tmp_path: Path, with_hop_key: bool
) -> None:
    async with running_core(tmp_path / "data", THROTTLE) as core:
        client = CoreClient(f"127.0.0.1:{core.port}", deadline=5, hop_key=core.hop_key if with_hop_key else "")
        try:
            codes = await failed_login_codes(client, [f"203.0.113.{n}" for n in range(1, 6)])
        finally:
            await client.close()
    # With the key, five clients fail once each; without it, they are all the edge.
    expected = ["UNAUTHENTICATED"] * 5 if with_hop_key else ["UNAUTHENTICATED"] * 3 + ["RESOURCE_EXHAUSTED"] * 2
    assert codes == expected
