"""Conference test helpers: a real core (tests/calls/support.py's world, on
a fake clock) serving ConferencesService over a recording bridge, and
devices that collect their conference events.

``RecordingBridge`` is a test double of the media server, not Janus: it
records the rooms made and destroyed, the room tokens admitted and taken
back, the feeds kicked and the tokens issued, so a test asserts what wac asked of the media server. Janus itself
is tested end to end in tests/janus.

``open_conferences`` hands the double to ``build_core`` (its
``conference_bridge``), which serves conferences over it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

import core.server
import tests.calls.support
from core import failures
from core.conferences.bridge import ConferenceBridge
from tests.calls.support import Device, World, open_world
from tests.support.clock import FakeClock
from tests.support.core import login
from wac.v1 import conferences_pb2, conferences_pb2_grpc

CONFERENCE_EVENTS = frozenset(
    {"conference_invited", "conference_participant_joined", "conference_participant_left", "conference_ended"}
)
JANUS_PATH = "/janus"
Conference = conferences_pb2.Conference


@dataclass
class RecordingBridge:
    """A test double of the media server: records what wac asks of it, in
    order in ``calls`` and by kind in the other lists. ``unavailable`` makes
    every method fail as a Janus that does not answer."""

    rooms: dict[int, tuple[str, bool]] = field(default_factory=dict)  # room -> (conference id, video)
    destroyed: list[int] = field(default_factory=list)
    admitted: list[tuple[int, str]] = field(default_factory=list)  # (room, room token)
    revoked: list[tuple[int, str]] = field(default_factory=list)
    kicks: list[tuple[int, int]] = field(default_factory=list)  # (room, feed id)
    tokens: list[tuple[str, float]] = field(default_factory=list)  # (token, expires at)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    unavailable: bool = False
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    @property
    def janus_path(self) -> str:
        return JANUS_PATH

    def _answer(self, name: str, *args: Any) -> None:
        if self.unavailable:
            raise failures.Unavailable("Janus did not answer")
        self.calls.append((name, args))

    async def create_room(self, conference_id: str, *, video: bool) -> int:
        self._answer("create_room", conference_id)
        room = next(self._ids)
        self.rooms[room] = (conference_id, video)
        return room

    async def destroy_room(self, room: int) -> None:
        self._answer("destroy_room", room)
        self.destroyed.append(room)

    async def admit(self, room: int) -> str:
        token = f"room-token-{len(self.admitted)}"
        self._answer("admit", room, token)
        self.admitted.append((room, token))
        return token

    async def revoke(self, room: int, token: str) -> None:
        self._answer("revoke", room, token)
        self.revoked.append((room, token))

    async def kick(self, room: int, feed_id: int) -> None:
        self._answer("kick", room, feed_id)
        self.kicks.append((room, feed_id))

    async def join_token(self, expires_at: float) -> str:
        self._answer("join_token", expires_at)
        token = f"token-{len(self.tokens)}"
        self.tokens.append((token, expires_at))
        return token


@dataclass
class Member(Device):
    """A device that collects its conference events (a calls' Device collects call events)."""

    expire_time: float = 0.0

    @property
    def conferences(self) -> conferences_pb2_grpc.ConferencesServiceStub:
        return conferences_pb2_grpc.ConferencesServiceStub(self.channel)

    collects: ClassVar[frozenset[str]] = CONFERENCE_EVENTS

    async def open(
        self, *invitees: str, title: str = "standup", media: int = Conference.AUDIO_VIDEO
    ) -> conferences_pb2.Conference:
        request = conferences_pb2.CreateConferenceRequest(title=title, invitees=invitees, media=media)  # type: ignore[arg-type]
        return await self.conferences.CreateConference(request, metadata=self.metadata)

    async def invite(self, conference_id: str, *invitees: str) -> conferences_pb2.Conference:
        request = conferences_pb2.InviteToConferenceRequest(conference_id=conference_id, invitees=invitees)
        return await self.conferences.InviteToConference(request, metadata=self.metadata)

    async def join(self, conference_id: str) -> conferences_pb2.JoinConferenceResponse:
        request = conferences_pb2.JoinConferenceRequest(conference_id=conference_id)
        return await self.conferences.JoinConference(request, metadata=self.metadata)

    async def leave(self, conference_id: str) -> conferences_pb2.Conference:
        request = conferences_pb2.LeaveConferenceRequest(conference_id=conference_id)
        return await self.conferences.LeaveConference(request, metadata=self.metadata)

    async def end(self, conference_id: str) -> conferences_pb2.Conference:
        request = conferences_pb2.EndConferenceRequest(conference_id=conference_id)
        return await self.conferences.EndConference(request, metadata=self.metadata)

    async def mine(self, **fields: Any) -> conferences_pb2.ListConferencesResponse:
        request = conferences_pb2.ListConferencesRequest(**fields)
        return await self.conferences.ListConferences(request, metadata=self.metadata)


@dataclass
class Operator:
    """A SAPI caller with an API key."""

    name: str
    key: str
    channel: grpc.aio.Channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    @property
    def conferences(self) -> conferences_pb2_grpc.ConferencesServiceStub:
        return conferences_pb2_grpc.ConferencesServiceStub(self.channel)

    async def end(self, conference_id: str) -> conferences_pb2.Conference:
        request = conferences_pb2.EndConferenceRequest(conference_id=conference_id)
        return await self.conferences.EndConference(request, metadata=self.metadata)

    async def kick(self, conference_id: str, username: str) -> conferences_pb2.Conference:
        request = conferences_pb2.KickFromConferenceRequest(conference_id=conference_id, username=username)
        return await self.conferences.KickFromConference(request, metadata=self.metadata)

    async def list(self, **fields: Any) -> conferences_pb2.ListConferencesResponse:
        request = conferences_pb2.ListConferencesRequest(**fields)
        return await self.conferences.ListConferences(request, metadata=self.metadata)


@dataclass
class Conferences:
    """A world whose core serves conferences over ``bridge``."""

    world: World
    bridge: ConferenceBridge

    @property
    def recorded(self) -> RecordingBridge:
        assert isinstance(self.bridge, RecordingBridge)
        return self.bridge

    async def member(self, username: str, name: str = "web", *, connect: bool = True) -> Member:
        """A logged-in device, online with its event stream open unless not ``connect``."""
        world = self.world
        await world.subscriber(username)
        session = await login(world.channel, username, device=name)
        device = Member(
            username,
            session.session_id,
            session.access_token,
            world.channel,
            world.core,
            expire_time=session.expire_time.ToMicroseconds() / 1e6,
        )
        if connect:
            await device.connect()
        world.devices.append(device)
        return device

    async def operator(self, *scopes: str) -> Operator:
        name = "ops-" + "-".join(scopes)
        service = await self.world.service(name, *scopes)
        return Operator(name, service.key, self.world.channel)

    async def advance(self, seconds: float) -> None:
        await self.world.advance(seconds)

    async def restart(self) -> None:
        """Stop the core (devices drop) and start a new one on the same data,
        serving conferences again; devices reconnect with ``connect``."""
        await self.world.restart()


@asynccontextmanager
async def open_conferences(
    tmp_path: Path, env: Mapping[str, str] | None = None, *, bridge: ConferenceBridge | None = None
) -> AsyncIterator[Conferences]:
    bridge = RecordingBridge() if bridge is None else bridge
    with pytest.MonkeyPatch.context() as patch:
        build = functools.partial(core.server.build_core, conference_bridge=bridge)
        patch.setattr(tests.calls.support, "build_core", build)
        async with open_world(tmp_path, env, clock=FakeClock()) as world:
            yield Conferences(world, bridge)
