"""The core believes a forwarded client address only from a trusted hop
(issue 14, item 12): anyone reaching its port could otherwise name a new
address on every attempt and never meet the per-address login throttle."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from tests.support.core import running_core
from wac.v1 import identity_pb2, identity_pb2_grpc

# The fourth failed login from one address within the delay is refused;
# one username per attempt, so that only the address can be what refuses.
THROTTLE = {
    "WAC_IDENTITY_THROTTLE_AFTER": "3",
    "WAC_IDENTITY_THROTTLE_DELAY": "30",
    "WAC_IDENTITY_LOCK_AFTER": "1000",
}


async def failed_logins(
    channel: grpc.aio.Channel, metadata_for: list[tuple[tuple[str, str], ...]]
) -> list[grpc.StatusCode]:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    codes = []
    for attempt, metadata in enumerate(metadata_for):
        request = identity_pb2.LoginRequest(username=f"nobody{attempt}", password="wrong password", device_name="t")
        try:
            await stub.Login(request, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    return codes


def spoofed(count: int, hop: str = "", last: bool = True) -> list[tuple[tuple[str, str], ...]]:
    """Metadata naming a new address on every attempt (as the last entry, or the first)."""
    rows = []
    for i in range(count):
        forwarded = f"10.1.0.1, 203.0.113.{i + 1}" if last else f"203.0.113.{i + 1}, 10.1.0.1"
        rows.append((("x-forwarded-for", forwarded), *((("x-wac-hop", hop),) if hop else ())))
    return rows


async def attempts(tmp_path: Path, env: Mapping[str, str], rows_for_key: object) -> list[grpc.StatusCode]:
    async with running_core(tmp_path / "data", {**THROTTLE, **env}) as core:
        rows = rows_for_key(core.hop_key) if callable(rows_for_key) else rows_for_key
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            return await failed_logins(channel, rows)


UNAUTHENTICATED, EXHAUSTED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_spoofed_address_without_the_hop_key_is_throttled_as_the_peer(tmp_path: Path) -> None:
    codes = await attempts(tmp_path, {}, spoofed(6))
    assert codes[:3] == [UNAUTHENTICATED] * 3
    assert codes[3:] == [EXHAUSTED] * 3


async def test_a_wrong_hop_key_is_no_hop_key(tmp_path: Path) -> None:
    codes = await attempts(tmp_path, {}, spoofed(6, hop="wac_0123456789abcdef_guessed"))
    assert codes[3:] == [EXHAUSTED] * 3


async def test_with_the_hop_key_the_last_forwarded_entry_is_the_client(tmp_path: Path) -> None:
    # Every attempt from its own client: none is throttled.
    codes = await attempts(tmp_path, {}, lambda key: spoofed(6, hop=key))
    assert codes == [UNAUTHENTICATED] * 6
    # Only the entry the hop added counts: the client's own entries before it do not.
    codes = await attempts(tmp_path / "2", {}, lambda key: spoofed(6, hop=key, last=False))
    assert codes[3:] == [EXHAUSTED] * 3


async def test_a_configured_trusted_proxy_is_believed_without_the_hop_key(tmp_path: Path) -> None:
    codes = await attempts(tmp_path, {"WAC_CORE_TRUSTED_PROXIES": "127.0.0.1"}, spoofed(6))
    assert codes == [UNAUTHENTICATED] * 6
