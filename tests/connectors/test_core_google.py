"""Google contacts through a real core and edge, against the Google stand-in:
the link flow a browser goes through (consent, the edge's callback page,
CompleteGoogleLink with the subscriber's own session), the import, who finds
the imported entries, a revoked grant told to the subscriber, unlinking,
and a restart."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest

from core.directory.store import DirectoryStore
from core.server import Core
from edges.wapi.server import Edge, start_edge
from tests.presence.devices import Device, eventually, md
from tests.support.core import add_subscriber, api_key, running_core
from tests.support.core import test_config as config_for
from tests.support.google_standin import GoogleStandIn
from tests.support.server import free_port
from tests.support.stack import front_door
from tests.support.status import field_violations
from tests.support.timing import seconds
from tests.wapi.support import wapi
from wac.v1 import directory_pb2, directory_pb2_grpc, identity_pb2, identity_pb2_grpc

CLIENT_ID = "1234-wac.apps.googleusercontent.com"
CLIENT_SECRET = "client-secret-xyz"
GoogleLink = directory_pb2.GoogleLink
SyncRun = directory_pb2.SyncRun


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    google: GoogleStandIn
    redirect_uri: str
    core: Core
    channel: grpc.aio.Channel
    edge: Edge
    admin: str  # an API key with connectors.admin

    @property
    def connectors(self) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel)

    async def listed(self) -> dict[str, directory_pb2.Connector]:
        response = await self.connectors.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=md(self.admin))
        return {c.name: c for c in response.connectors}


def google_section(google: GoogleStandIn, redirect_uri: str) -> str:
    key = base64.b64encode(os.urandom(32)).decode()
    return f"""
[connectors.google]
type = "google"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "{redirect_uri}"
token_key = "{key}"
authorization_endpoint = "{google.authorization_endpoint}"
token_endpoint = "{google.token_endpoint}"
revoke_endpoint = "{google.revoke_endpoint}"
people_endpoint = "{google.people_endpoint}"
interval = "1h"
"""


@asynccontextmanager
async def core_at(data_dir: Path, env: dict[str, str]) -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    async with running_core(data_dir, env) as core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        yield core, channel


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    google = GoogleStandIn(CLIENT_ID, CLIENT_SECRET)
    await google.start()
    # Google sends the browser to the edge; its port is in the configuration.
    http_port = free_port()
    redirect_uri = f"http://127.0.0.1:{http_port}/oauth2/google/callback"
    config = tmp_path / "wac.toml"
    config.write_text(google_section(google, redirect_uri))
    env = {"WAC_CONFIG": str(config)}
    data_dir = tmp_path / "data"
    try:
        async with core_at(data_dir, env) as (core, channel):
            edge = await start_edge(
                config_for(
                    data_dir,
                    {
                        "WAC_EDGE_LISTEN": "127.0.0.1:0",
                        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core.port}",
                    },
                )
            )
            try:
                admin = await api_key(core, "ops", "connectors.admin")
                yield Stack(data_dir, env, google, redirect_uri, core, channel, edge, admin)
            finally:
                await edge.stop()
    finally:
        await google.stop()


def fill(google: GoogleStandIn, count: int) -> None:
    for i in range(count):
        google.put_person(f"people/c{i:04d}", f"Friend {i:02d}", [f"+3461100{i:04d}"])


async def consent(authorization_uri: str) -> str:
    """What the browser does at Google: the consent page redirects to the
    callback. Returns that callback address, code and state in its query."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(authorization_uri, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def code_and_state(callback: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(callback).query)
    return query["code"][0], query["state"][0]


async def authorize(device: Device) -> directory_pb2.GoogleLinkAuthorization:
    return await device.directory.CreateGoogleLinkAuthorization(
        directory_pb2.CreateGoogleLinkAuthorizationRequest(), metadata=device.metadata
    )


async def complete(device: Device, code: str, state: str) -> directory_pb2.GoogleLink:
    return await device.directory.CompleteGoogleLink(
        directory_pb2.CompleteGoogleLinkRequest(state=state, code=code), metadata=device.metadata
    )


async def get_link(device: Device) -> directory_pb2.GoogleLink:
    return await device.directory.GetGoogleLink(directory_pb2.GetGoogleLinkRequest(), metadata=device.metadata)


async def link(device: Device) -> directory_pb2.GoogleLink:
    """The whole flow, then the first import finished."""
    code, state = code_and_state(await consent((await authorize(device)).authorization_uri))
    await complete(device, code, state)
    return await imported(device)


async def imported(device: Device, after_run: float = 0) -> directory_pb2.GoogleLink:
    """The link once an import (started after ``after_run`` seconds) has finished."""
    found: list[directory_pb2.GoogleLink] = []

    async def done() -> bool:
        current = await get_link(device)
        run = current.last_run
        if (
            not current.HasField("last_run")
            or run.state == SyncRun.RUNNING
            or run.start_time.ToMicroseconds() / 1e6 < after_run
        ):
            return False
        found.append(current)
        return True

    await eventually(done)
    return found[-1]


async def search(device: Device, query: str) -> list[tuple[str, str]]:
    response = await device.directory.SearchDirectory(
        directory_pb2.SearchDirectoryRequest(query=query, page_size=50), metadata=device.metadata
    )
    return [(e.source, e.display_name) for e in response.entries]


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_link_import_and_who_finds_it(stack: Stack) -> None:
    fill(stack.google, 3)
    core, channel = stack.core, stack.channel
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    laptop = await Device.login(core, channel, "alice")
    phone = await Device.login(core, channel, "alice")
    bob = await Device.login(core, channel, "bob", connect=False)

    started = time.time()
    authorization = await authorize(phone)
    assert authorization.authorization_uri.startswith(stack.google.authorization_endpoint + "?")
    query = parse_qs(urlsplit(authorization.authorization_uri).query)
    assert query["state"] == [authorization.state] and query["redirect_uri"] == [stack.redirect_uri]
    assert 590 <= authorization.expire_time.seconds - started <= 610  # link_timeout, 10 minutes

    callback = await consent(authorization.authorization_uri)
    assert callback.startswith(stack.redirect_uri + "?")
    code, state = code_and_state(callback)
    assert state == authorization.state

    # The edge answers the callback with the page that hands code and state
    # to the app; it exchanges nothing and echoes nothing.
    async with httpx.AsyncClient() as http:
        page = await http.get(callback)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "wac.googleLink" in page.text and "window.opener.postMessage" in page.text
    assert code not in page.text and state not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    assert stack.google.count("/token") == 0

    linked = await complete(phone, code, state)
    assert (linked.username, linked.state, linked.reason) == ("alice", GoogleLink.LINKED, "")
    assert linked.create_time.seconds >= int(started)
    # The other device hears of it; the one that linked knows already.
    told = (await laptop.next_event("google_link_changed")).google_link_changed
    assert (told.link.username, told.link.state, told.deleted) == ("alice", GoogleLink.LINKED, False)
    assert not [e for e in await phone.drain() if e.HasField("google_link_changed")]

    # The first import runs at once, in the background.
    done = await imported(phone)
    run = done.last_run
    assert (run.connector, run.state, run.full) == ("google:alice", SyncRun.SUCCEEDED, True)
    assert (run.added, run.updated, run.removed, run.skipped) == (3, 0, 0, 0)
    assert (await stack.listed())["google:alice"].type == "google"

    # Alice finds her contacts; bob does not, by name or by number.
    expected = [("google:alice", f"Friend {i:02d}") for i in range(3)]
    assert await search(phone, "friend") == expected
    assert await search(bob, "friend") == []
    assert await search(bob, "+34 611 000 001") == []
    assert await search(phone, "+34 611 000 001") == [("google:alice", "Friend 01")]


async def test_the_callback_page_wants_what_google_sends(stack: Stack) -> None:
    base = stack.redirect_uri
    async with httpx.AsyncClient() as http:
        declined = await http.get(f"{base}?error=access_denied&state=abc")
        missing_state = await http.get(f"{base}?code=4/xyz")
        bare = await http.get(base)
    assert declined.status_code == 200 and "wac.googleLink" in declined.text
    assert (missing_state.status_code, bare.status_code) == (400, 400)
    assert "wac.googleLink" not in bare.text


async def test_the_state_must_be_one_the_caller_started(stack: Stack) -> None:
    core, channel = stack.core, stack.channel
    await add_subscriber(core, "alice")
    await add_subscriber(core, "mallory")
    alice = await Device.login(core, channel, "alice", connect=False)
    mallory = await Device.login(core, channel, "mallory", connect=False)
    code, state = code_and_state(await consent((await authorize(alice)).authorization_uri))

    forged = await rpc_error(complete(alice, code, "forged-state"))
    assert forged.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(forged) == ["state"] and "state" in (forged.details() or "")
    # A callback stolen from alice does not link mallory's session to her account.
    stolen = await rpc_error(complete(mallory, code, state))
    assert (stolen.code(), field_violations(stolen)) == (grpc.StatusCode.INVALID_ARGUMENT, ["state"])
    no_code = await rpc_error(complete(alice, "", state))
    assert (no_code.code(), field_violations(no_code)) == (grpc.StatusCode.INVALID_ARGUMENT, ["code"])

    assert stack.google.count("/token") == 0, "no code was exchanged"
    for device in (alice, mallory):
        missing = await rpc_error(get_link(device))
        assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_a_revoked_grant_is_told_and_linking_again_mends_it(stack: Stack) -> None:
    fill(stack.google, 2)
    await add_subscriber(stack.core, "alice")
    alice = await Device.login(stack.core, stack.channel, "alice")
    assert (await link(alice)).last_run.added == 2
    await alice.drain()

    stack.google.revoke_all()  # the user removes wac's access in their Google account
    run = await stack.connectors.SyncConnector(
        directory_pb2.SyncConnectorRequest(name="google:alice"), metadata=md(stack.admin)
    )
    assert run.state == SyncRun.FAILED and "revoked" in run.error

    told = (await alice.next_event("google_link_changed")).google_link_changed
    assert (told.link.state, told.deleted) == (GoogleLink.BROKEN, False)
    assert "invalid_grant" in told.link.reason
    assert told.link.last_run.state == SyncRun.FAILED
    broken = await get_link(alice)
    assert (broken.state, broken.reason) == (GoogleLink.BROKEN, told.link.reason)
    # What was imported stays until alice links again or unlinks.
    assert len(await search(alice, "friend")) == 2

    stack.google.put_person("people/c0100", "Friend Newer", ["+34611009999"])
    relinked_at = time.time()
    code, state = code_and_state(await consent((await authorize(alice)).authorization_uri))
    assert (await complete(alice, code, state)).state == GoogleLink.LINKED
    mended = await imported(alice, after_run=relinked_at)
    assert (mended.state, mended.last_run.state, mended.last_run.full) == (GoogleLink.LINKED, SyncRun.SUCCEEDED, True)
    assert len(await search(alice, "friend")) == 3


async def test_unlink_revokes_the_grant_and_removes_the_entries(stack: Stack) -> None:
    fill(stack.google, 2)
    await add_subscriber(stack.core, "alice")
    laptop = await Device.login(stack.core, stack.channel, "alice")
    phone = await Device.login(stack.core, stack.channel, "alice", connect=False)
    await link(phone)
    await laptop.drain()

    await phone.directory.DeleteGoogleLink(directory_pb2.DeleteGoogleLinkRequest(), metadata=phone.metadata)
    assert stack.google.count("/revoke") == 1
    assert await search(phone, "friend") == []
    assert (await rpc_error(get_link(phone))).code() == grpc.StatusCode.NOT_FOUND
    assert "google:alice" not in await stack.listed()
    told = (await laptop.next_event("google_link_changed")).google_link_changed
    assert (told.link.username, told.deleted) == ("alice", True)

    again = await rpc_error(
        phone.directory.DeleteGoogleLink(directory_pb2.DeleteGoogleLinkRequest(), metadata=phone.metadata)
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_links_outlive_a_restart_and_not_their_subscriber(stack: Stack) -> None:
    fill(stack.google, 2)
    await add_subscriber(stack.core, "alice")
    await link(await Device.login(stack.core, stack.channel, "alice", connect=False))

    # A second core on the same database schedules the link it finds there.
    async with core_at(stack.data_dir, stack.env) as (core, channel):
        admin = md(await api_key(core, "ops2", "connectors.admin", "subscribers.write"))
        directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        listed = await directory.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=admin)
        assert [c.name for c in listed.connectors] == ["google:alice"]

        # Deleting the subscriber revokes their grant and removes their entries.
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        await identity.DeleteSubscriber(identity_pb2.DeleteSubscriberRequest(username="alice"), metadata=admin)

        async def gone() -> bool:
            listed = await directory.ListConnectors(directory_pb2.ListConnectorsRequest(), metadata=admin)
            return not listed.connectors

        await eventually(gone)
        assert stack.google.count("/revoke") == 1
        assert await DirectoryStore(core.engine).count("google:alice") == 0


async def test_the_methods_over_the_wapi(stack: Stack) -> None:
    """The SDK's path: JSON-RPC through the edge, as the browser sends it."""
    await add_subscriber(stack.core, "alice")
    async with wapi(stack.edge) as client:
        await client.login("alice")
        started = await client.result("DirectoryService.CreateGoogleLinkAuthorization", {})
        assert set(started) == {"authorizationUri", "state", "expireTime"}
        assert started["expireTime"].endswith("Z")
        missing = await client.error("DirectoryService.GetGoogleLink", {})
        assert missing["data"]["status"] == "NOT_FOUND"
        code, state = code_and_state(await consent(started["authorizationUri"]))
        forged = await client.error("DirectoryService.CompleteGoogleLink", {"code": code, "state": "x" + state})
        assert forged["data"]["status"] == "INVALID_ARGUMENT" and "state" in forged["message"]
        linked = await client.result("DirectoryService.CompleteGoogleLink", {"code": code, "state": state})
        assert (linked["username"], linked["state"]) == ("alice", "LINKED")


async def test_the_callback_through_the_front_door(stack: Stack, tmp_path: Path) -> None:
    """Google sends the browser to the public address: Envoy's "/" route to the edge."""
    async with front_door(stack.core.port, stack.edge, tmp_path) as port, httpx.AsyncClient(timeout=seconds()) as http:
        page = await http.get(f"http://127.0.0.1:{port}/oauth2/google/callback?code=4/abc&state=s1")
        refused = await http.get(f"http://127.0.0.1:{port}/oauth2/google/callback")
    assert page.status_code == 200, (tmp_path / "envoy.log").read_text(errors="replace")
    assert "wac.googleLink" in page.text and "4/abc" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'sha256-")
    assert page.headers["cache-control"] == "no-store"
    assert refused.status_code == 400
