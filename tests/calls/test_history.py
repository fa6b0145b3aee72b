"""Call history: ListCalls newest first, paged, filtered; GetIceServers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import grpc

from core.calls.ice import ice_servers, turn_credentials
from settings.config import IceConfig
from tests.calls.support import Call, World, fails
from wac.v1 import calls_pb2


async def test_list_calls_pages_newest_first(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    made = []
    for index in range(7):
        if index % 3 == 0:
            made.append(await bob.create("alice"))  # alice is the callee here
        else:
            made.append(await alice.create(f"tel:+3491100000{index}"))
        await world.advance(1)  # each call a second newer than the last
    newest_first = [c.call_id for c in reversed(made)]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await alice.list(page_size=3, page_token=token)
        pages += 1
        assert len(page.calls) <= 3
        seen += [c.call_id for c in page.calls]
        token = page.next_page_token
        if not token:
            break
    assert seen == newest_first
    assert pages == 3

    ringing = await alice.list(state=Call.RINGING)
    assert [c.call_id for c in ringing.calls] == [c.call_id for c in reversed(made) if c.callee == "alice"]
    ended = await alice.list(state=Call.ENDED, page_size=2)
    assert len(ended.calls) == 2 and ended.next_page_token
    assert all(c.state == Call.ENDED for c in ended.calls)
    # Bob sees only his own three.
    assert len((await bob.list()).calls) == 3

    reader = await world.service("reports", "calls.read")
    everything = await reader.calls.ListCalls(calls_pb2.ListCallsRequest(), metadata=reader.metadata)
    assert [c.call_id for c in everything.calls] == newest_first
    only_bob = await reader.calls.ListCalls(calls_pb2.ListCallsRequest(subscriber="bob"), metadata=reader.metadata)
    assert len(only_bob.calls) == 3

    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.list(page_token="garbage!"), "page_token")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.list(page_token="WzFd"), "page_token")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, alice.list(page_size=-1), "page_size")


async def test_ice_servers_without_configuration(world: World) -> None:
    alice = await world.device("alice")
    response = await alice.calls.GetIceServers(calls_pb2.GetIceServersRequest(), metadata=alice.metadata)
    assert list(response.ice_servers) == []
    assert not response.HasField("ttl")


async def test_ice_servers_with_turn(world_with) -> None:
    env = {
        "WAC_ICE_STUN_URLS": "stun:stun.example.org:3478",
        "WAC_ICE_TURN_URLS": "turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349",
        "WAC_ICE_TURN_SECRET": "s3cret",
        "WAC_ICE_TURN_TTL": "600",
    }
    async with world_with(env) as world:
        alice = await world.device("alice")
        response = await alice.calls.GetIceServers(calls_pb2.GetIceServersRequest(), metadata=alice.metadata)
        stun, turn = response.ice_servers
        assert list(stun.urls) == ["stun:stun.example.org:3478"]
        assert (stun.username, stun.credential) == ("", "")
        assert list(turn.urls) == [
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349",
        ]
        expiry, _, user = turn.username.partition(":")
        assert user == "alice"
        assert int(expiry) == int(world.clock.time()) + 600
        expected = base64.b64encode(hmac.new(b"s3cret", turn.username.encode(), hashlib.sha1).digest()).decode()
        assert turn.credential == expected
        assert response.ttl.seconds == 600


def test_turn_credentials_match_coturn() -> None:
    # The TURN REST API example: coturn computes the same from the secret.
    name, credential = turn_credentials("north", "bob", 1_700_000_000)
    assert name == "1700000000:bob"
    digest = hmac.new(b"north", b"1700000000:bob", hashlib.sha1).digest()
    assert credential == base64.b64encode(digest).decode()


def test_turn_without_secret_is_returned_bare() -> None:
    servers, ttl = ice_servers(IceConfig(turn_urls=("turn:t.example.org",)), "bob", 0.0)
    assert [(s.urls, s.username, s.credential) for s in servers] == [(("turn:t.example.org",), "", "")]
    assert ttl == 0
