"""A conference on the embedded node and on a cluster (tests/support/cluster.py)
through one real Janus, its members on different sides: on the cluster, the
room made by one core, joined, kicked and ended through the other, and a
device lost on one side counted out for the members on the other."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_scenarios import online
from tests.janus.test_conferences_through_janus import enter
from tests.support.cluster import Deployment, open_deployment
from tests.support.janus import janus_socket, running_janus
from tests.support.timing import seconds


@pytest.fixture(params=["embedded", "cluster"])
async def with_janus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Deployment, str]]:
    """The deployment, every core on one Janus; and Janus's WebSocket URL."""
    shared = {"WAC_CONFERENCES_JANUS_SECRET": secrets.token_urlsafe(24)}
    async with running_janus(tmp_path / "janus", shared) as janus:
        env = {
            **shared,
            "WAC_CONFERENCES_ENABLED": "true",
            "WAC_CONFERENCES_JANUS_API_LISTEN": janus.config.conferences.janus_api_listen,
        }
        async with open_deployment(request, tmp_path, env) as deployment:
            yield deployment, f"ws://{janus.ws_listen}/"


def conference_events(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e[kind] for e in events if kind in e]


async def left(client: Any, username: str) -> str:
    """The reason of the next conferenceParticipantLeft about ``username``."""
    while True:
        events = await client.events_until("conferenceParticipantLeft")
        told = conference_events(events, "conferenceParticipantLeft")[-1]
        if told["username"] == username:
            return str(told["reason"])


async def test_a_conference_across_the_sides(with_janus: tuple[Deployment, str]) -> None:
    deployment, janus_url = with_janus
    for username in ("alice", "bob", "carol"):
        await deployment.subscriber(username)
    key = await deployment.api_key("operator", "conferences.read", "conferences.write", "calls.read")
    async with (
        deployment.client(1) as alice,
        deployment.client(2) as bob,
        deployment.client(2) as carol,
        deployment.client(2, key) as operator,
    ):
        await online(deployment, alice, "alice")
        await online(deployment, bob, "bob")
        await online(deployment, carol, "carol")

        # Side 1's core makes the room; side 2's devices are invited.
        made = await alice.result(
            "ConferencesService.CreateConference",
            {"title": "across", "invitees": ["bob", "carol"], "media": "AUDIO_VIDEO"},
        )
        conference_id = made["conferenceId"]
        for invitee in (bob, carol):
            events = await invitee.events_until("conferenceInvited")
            assert conference_events(events, "conferenceInvited")[-1]["conference"]["conferenceId"] == conference_id

        # bob joins through side 2's core and enters the room side 1's core made.
        joined = await bob.result("ConferencesService.JoinConference", {"conferenceId": conference_id})
        async with janus_socket(janus_url, joined["token"]) as room:
            entered = await enter(room, joined, "bob")
            assert entered.get("videoroom") == "joined", entered
            events = await alice.events_until("conferenceParticipantJoined")
            assert conference_events(events, "conferenceParticipantJoined")[-1]["username"] == "bob"
            await alice.result("ConferencesService.JoinConference", {"conferenceId": conference_id})
            await bob.events_until("conferenceParticipantJoined")

            # An operator on side 2 kicks bob: Janus drops him, side 1 hears it.
            await operator.result(
                "ConferencesService.KickFromConference", {"conferenceId": conference_id, "username": "bob"}
            )
            await room.event_with("kicked", timeout=seconds())
        assert await left(alice, "bob") == "KICKED"

        # alice's socket on side 1 drops for good: past the grace period the
        # members on side 2 are told she is out.
        alice.ws.transport.abort()
        assert await left(carol, "alice") == "CONNECTION_LOST"

        # The operator's list (side 2) and end; the history on either side.
        listed = await operator.result("ConferencesService.ListConferences", {})
        [active] = [c for c in listed["conferences"] if c["conferenceId"] == conference_id]
        assert active.get("participants", []) == []
        await operator.result("ConferencesService.EndConference", {"conferenceId": conference_id})
        events = await carol.events_until("conferenceEnded")
        assert conference_events(events, "conferenceEnded")[-1]["conference"]["endedBy"] == "operator"
        history = await operator.result("CallsService.ListCalls", {"subscriber": "carol"})
        [entry] = history["calls"]
        assert (entry["callId"], entry["via"], entry["endReason"]) == (conference_id, "CONFERENCE", "OPERATOR")
        assert entry["conference"]["attendees"] == ["bob", "alice"]
