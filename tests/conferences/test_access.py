"""Who may do what to a conference, what a malformed request is told, and
what every method answers when Janus is not running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from core.auth import policy
from core.conferences import rules
from core.conferences.bridge import NoBridge
from core.conferences.handler import ONLINE_WAIT
from tests.calls.support import fails
from tests.conferences.support import Conference, Conferences, open_conferences
from wac.v1 import conferences_pb2

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def field_of(error: grpc.aio.AioRpcError) -> str:
    """The field a google.rpc.BadRequest detail names."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    request = error_details_pb2.BadRequest()
                    detail.Unpack(request)
                    return request.field_violations[0].field
    return ""


def test_every_method_has_a_rule() -> None:
    service = conferences_pb2.DESCRIPTOR.services_by_name["ConferencesService"]
    for method in service.methods:
        assert f"/{service.full_name}/{method.name}" in policy.RULES, method.name
    kick = policy.rule_for("/wac.v1.ConferencesService/KickFromConference")
    assert not kick.subscribers and kick.scopes == ("conferences.write",)


async def test_a_stranger_gets_the_same_answer_as_an_unknown_conference(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    carol = await conferences.member("carol")
    made = await alice.open("bob")
    await bob.join(made.conference_id)

    answers = []
    for conference_id in (made.conference_id, "AAAAAAAAAAAAAAAAAAAAAA"):
        for attempt in (
            carol.join(conference_id),
            carol.leave(conference_id),
            carol.invite(conference_id, "carol"),
            carol.end(conference_id),
        ):
            error = await fails(DENIED, attempt, rules.NOT_INVITED)
            answers.append((error.code(), error.details()))
    assert len(set(answers)) == 1
    # Nor does a stranger see it listed, nor was anything changed.
    assert not (await carol.mine()).conferences
    assert [p.username for p in (await bob.join(made.conference_id)).conference.participants] == ["bob"]
    # An ended conference does not tell a stranger more.
    await alice.end(made.conference_id)
    await fails(DENIED, carol.join(made.conference_id), rules.NOT_INVITED)


async def test_only_the_creator_invites_and_ends(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    made = await alice.open("bob")
    await fails(DENIED, bob.invite(made.conference_id, "carol"), "only the conference's creator may invite")
    await fails(DENIED, bob.end(made.conference_id), "only the conference's creator or an operator may end it")
    # Kicking is for operators only: the policy refuses subscribers.
    request = conferences_pb2.KickFromConferenceRequest(conference_id=made.conference_id, username="bob")
    await fails(
        DENIED, alice.conferences.KickFromConference(request, metadata=alice.metadata), "not open to subscribers"
    )


async def test_each_malformed_request_names_its_field(conferences: Conferences) -> None:
    await conferences.world.subscriber("bob")
    alice = await conferences.member("alice")
    for title in ("", "   "):
        assert field_of(await fails(INVALID, alice.open("bob", title=title), "title: is required")) == "title"
    error = await fails(INVALID, alice.open("bob", title="x" * (rules.MAX_TITLE + 1)), f"at most {rules.MAX_TITLE}")
    assert field_of(error) == "title"
    assert field_of(await fails(INVALID, alice.open("bob", ""), "invitees[1]: is required")) == "invitees[1]"
    error = await fails(grpc.StatusCode.NOT_FOUND, alice.open("bob", "nobody"), "subscriber 'nobody' does not exist")
    assert field_of(error) == "invitees[1]"
    many = [f"user{n}" for n in range(rules.MAX_INVITEES + 1)]
    error = await fails(INVALID, alice.open(*many), f"at most {rules.MAX_INVITEES} invitees")
    assert field_of(error) == "invitees"
    assert field_of(await fails(INVALID, alice.open("bob", media=7), "unknown media 7")) == "media"

    made = await alice.open("bob")
    assert field_of(await fails(INVALID, alice.invite(made.conference_id), "invitees: is required")) == "invitees"
    error = await fails(grpc.StatusCode.NOT_FOUND, alice.invite(made.conference_id, "nobody"), "'nobody'")
    assert field_of(error) == "invitees[0]"
    for attempt in (alice.join(""), alice.leave(""), alice.end(""), alice.invite("", "bob")):
        assert field_of(await fails(INVALID, attempt, "conference_id: is required")) == "conference_id"
    assert field_of(await fails(INVALID, alice.join("x" * 65), "conference_id")) == "conference_id"
    # The bound counts the invitees of before.
    await fails(INVALID, alice.invite(made.conference_id, *many[: rules.MAX_INVITEES]), "at most")
    # The media defaults to audio.
    request = conferences_pb2.CreateConferenceRequest(title="t")
    assert (await alice.conferences.CreateConference(request, metadata=alice.metadata)).media == Conference.AUDIO


async def test_creating_needs_call_permissions_and_is_bounded(conferences: Conferences) -> None:
    vic, pat = await conferences.member("vic"), await conferences.member("pat")
    await fails(DENIED, vic.open(), "a video conference needs the call.video permission")
    assert (await vic.open(media=Conference.AUDIO)).media == Conference.AUDIO
    await fails(DENIED, pat.open(media=Conference.AUDIO), "needs the call.audio permission")

    alice = await conferences.member("alice")
    made = [await alice.open() for _ in range(rules.MAX_ACTIVE_PER_CREATOR)]
    await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.open(), "end one first")
    await alice.end(made[0].conference_id)
    await alice.open()


async def test_joining_needs_an_open_event_stream(conferences: Conferences) -> None:
    alice = await conferences.member("alice")
    bob = await conferences.member("bob", connect=False)
    made = await alice.open("bob")
    attempt = asyncio.ensure_future(bob.join(made.conference_id))
    await asyncio.sleep(0.1)
    await conferences.advance(ONLINE_WAIT)
    await fails(PRECONDITION, attempt, "no open event stream")
    assert conferences.recorded.tokens == []
    # A stream opened within the wait is enough.
    attempt = asyncio.ensure_future(bob.join(made.conference_id))
    await bob.connect()
    await conferences.advance(ONLINE_WAIT / 2)
    assert (await attempt).conference.participants[0].username == "bob"


async def test_without_janus_conferences_are_off(tmp_path: Path) -> None:
    async with open_conferences(tmp_path, bridge=NoBridge()) as conferences:
        alice = await conferences.member("alice")
        error = await fails(PRECONDITION, alice.open(), "conferences are off: Janus is not running")
        assert error.details() == "conferences are off: Janus is not running"
        assert not (await alice.mine()).conferences


async def test_a_janus_that_does_not_answer_leaves_no_conference(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    made = await alice.open("bob")
    await bob.expect("conference_invited")
    conferences.recorded.unavailable = True
    await fails(grpc.StatusCode.UNAVAILABLE, alice.open("bob"), "Janus did not answer")
    await fails(grpc.StatusCode.UNAVAILABLE, bob.join(made.conference_id), "Janus did not answer")
    assert [c.conference_id for c in (await alice.mine()).conferences] == [made.conference_id]
    # Ending never fails for the media server.
    assert (await alice.end(made.conference_id)).state == Conference.ENDED
    await bob.expect("conference_ended")
    await bob.quiet()


async def test_a_full_room_refuses_a_join(tmp_path: Path) -> None:
    async with open_conferences(tmp_path, {"WAC_CONFERENCES_MAX_PARTICIPANTS": "2"}) as conferences:
        alice, bob = await conferences.member("alice"), await conferences.member("bob")
        carol = await conferences.member("carol")
        made = await alice.open("bob", "carol")
        await alice.join(made.conference_id)
        await bob.join(made.conference_id)
        error = await fails(grpc.StatusCode.RESOURCE_EXHAUSTED, carol.join(made.conference_id), "at most 2")
        assert "the conference's room is full" in (error.details() or "")
        # The room token it was about to be admitted with is taken back.
        assert conferences.recorded.revoked == [conferences.recorded.admitted[-1]]
        # A participant's other device may still take its place.
        phone = await conferences.member("bob", "phone")
        await phone.join(made.conference_id)
        await phone.leave(made.conference_id)
        await carol.join(made.conference_id)
