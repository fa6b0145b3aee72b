"""Conferences end to end through a real Janus: wac (a real core and edge
behind a real Envoy) creates the room, admits its participants with Janus
tokens and room tokens, and polices it; a device reaches Janus through the
front door's /janus as the SDK does (tests/support/janus.py's JanusSocket).
Media between browsers is tests/browser's; here, who gets in and out."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.janus import sign_token
from tests.support.core import add_subscriber, api_key
from tests.support.janus import JanusSocket, janus_socket, running_janus
from tests.support.stack import Stack, running_stack
from tests.support.timing import seconds
from tests.wapi.support import PASSWORD, WapiClient, wapi


@dataclass
class Conferencing:
    stack: Stack
    key: str  # an operator's API key: conferences.read and conferences.write
    janus_secret: str

    @property
    def janus_url(self) -> str:
        return f"ws://127.0.0.1:{self.stack.port}/janus"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Conferencing]:
    # One secret for Janus and the core, as on several machines.
    shared = {"WAC_CONFERENCES_JANUS_SECRET": secrets.token_urlsafe(24)}
    async with running_janus(tmp_path / "janus", shared) as janus:
        env = {**shared, "WAC_CONFERENCES_JANUS_API_LISTEN": janus.config.conferences.janus_api_listen}
        async with running_stack(tmp_path / "data", env, janus_ws=janus.ws_listen) as stack:
            for username in ("alice", "bob", "carol"):
                await add_subscriber(stack.core, username, PASSWORD)
            key = await api_key(stack.core, "operator", "conferences.read", "conferences.write")
            yield Conferencing(stack, key, shared["WAC_CONFERENCES_JANUS_SECRET"])


async def online(client: WapiClient, username: str) -> None:
    await client.login(username)
    assert await client.result("EventsService.Subscribe", {}) == {}


async def enter(room: JanusSocket, joined: dict[str, Any], display: str) -> dict[str, Any]:
    """Join the room as a publisher, as the SDK does: the VideoRoom's answer."""
    await room.open_videoroom()
    return await room.videoroom(
        {
            "request": "join",
            "ptype": "publisher",
            "room": int(joined["room"]),
            "id": int(joined["feedId"]),
            "display": display,
            "token": joined["roomToken"],
        }
    )


async def test_only_who_wac_admits_gets_into_the_room_and_a_kick_keeps_them_out(world: Conferencing) -> None:
    edge = world.stack.edge
    async with wapi(edge) as alice, wapi(edge) as bob, wapi(edge) as carol:
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            await online(client, name)
        conference = await alice.result(
            "ConferencesService.CreateConference",
            {"title": "stand-up", "invitees": ["bob"], "media": "AUDIO_VIDEO"},
        )
        conference_id = conference["conferenceId"]
        invited = await bob.events_until("conferenceInvited")
        assert invited[-1]["conferenceInvited"]["conference"]["conferenceId"] == conference_id

        # carol was not invited: wac refuses her, as it would an unknown id.
        refused = await carol.error("ConferencesService.JoinConference", {"conferenceId": conference_id})
        assert refused["data"]["status"] == "PERMISSION_DENIED"

        joined = await alice.result("ConferencesService.JoinConference", {"conferenceId": conference_id})
        assert joined["janusPath"] == "/janus"
        expiry = int(joined["token"].split(",", 1)[0])
        assert time.time() < expiry <= time.time() + 15 * 60 + 5  # with the access token at the latest

        async with janus_socket(world.janus_url, joined["token"]) as room:
            entered = await enter(room, joined, "alice")
            assert entered.get("videoroom") == "joined", entered
            assert entered["id"] == int(joined["feedId"])

            # A token Janus did not get from wac, and an expired one, get nowhere.
            later = time.time() + 60
            for forged in (sign_token("guessed", later), sign_token(world.janus_secret, time.time() - 5)):
                answer = await room.request({"janus": "create"}, token=forged)
                assert answer["error"]["code"] == 403, answer

            # The operator kicks alice (SAPI): Janus drops her from the room.
            async with httpx.AsyncClient(base_url=world.stack.url, timeout=seconds()) as sapi:
                kicked = await sapi.post(
                    f"/sapi/v1/conferences/{conference_id}:kick",
                    json={"username": "alice"},
                    headers={"authorization": f"Bearer {world.key}"},
                )
            assert kicked.status_code == 200, kicked.text
            await room.event_with("kicked")

        # Her Janus token is still good, but her room token was taken back.
        async with janus_socket(world.janus_url, joined["token"]) as again:
            back = await enter(again, joined, "alice")
            assert back.get("error_code") == 432 or "allowed" in str(back.get("error")), back


async def test_ending_a_conference_destroys_its_room_for_everyone_in_it(world: Conferencing) -> None:
    edge = world.stack.edge
    async with wapi(edge) as alice, wapi(edge) as bob:
        await online(alice, "alice")
        await online(bob, "bob")
        conference = await alice.result(
            "ConferencesService.CreateConference",
            {"title": "all hands", "invitees": ["bob"], "media": "AUDIO"},
        )
        conference_id = conference["conferenceId"]
        joined = await bob.result("ConferencesService.JoinConference", {"conferenceId": conference_id})
        async with janus_socket(world.janus_url, joined["token"]) as room:
            assert (await enter(room, joined, "bob")).get("videoroom") == "joined"
            ended = await alice.result("ConferencesService.EndConference", {"conferenceId": conference_id})
            assert ended["state"] == "ENDED"
            await room.event_with("destroyed")
        events = await bob.events_until("conferenceEnded")
        assert events[-1]["conferenceEnded"]["conference"]["conferenceId"] == conference_id


async def test_the_operator_lists_active_conferences_with_their_participants(world: Conferencing) -> None:
    edge = world.stack.edge
    async with wapi(edge) as alice:
        await online(alice, "alice")
        conference = await alice.result(
            "ConferencesService.CreateConference",
            {"title": "review", "invitees": ["carol"], "media": "AUDIO_VIDEO"},
        )
        await alice.result("ConferencesService.JoinConference", {"conferenceId": conference["conferenceId"]})
        async with httpx.AsyncClient(base_url=world.stack.url, timeout=seconds()) as sapi:
            listed = await sapi.get("/sapi/v1/conferences", headers={"authorization": f"Bearer {world.key}"})
    assert listed.status_code == 200, listed.text
    (found,) = [c for c in listed.json()["conferences"] if c["conferenceId"] == conference["conferenceId"]]
    assert [p["username"] for p in found["participants"]] == ["alice"]
