"""A logged-in device for presence and contacts tests: its stubs, and its
event stream read into a queue in the background."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from core.server import Core
from tests.support.core import login
from tests.support.timing import seconds
from wac.v1 import (
    contacts_pb2,
    contacts_pb2_grpc,
    directory_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
)

Status = presence_pb2.Presence.Status
# Numbers the markers Device.drain sends down a stream: contact changes no
# contact of a real subscriber can have.
_MARKERS = itertools.count()


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float | None = None) -> None:
    """Wait until ``check`` holds, polling; fail after ``timeout``."""
    deadline = time.monotonic() + (timeout if timeout is not None else seconds())
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Device:
    """One session of a subscriber, with an optional open event stream."""

    def __init__(self, core: Core, channel: grpc.aio.Channel, session: identity_pb2.Session) -> None:
        self.core = core
        self.session = session
        self.username = session.subscriber.username
        self.metadata = md(session.access_token)
        self.presence = presence_pb2_grpc.PresenceServiceStub(channel)
        self.contacts = contacts_pb2_grpc.ContactsServiceStub(channel)
        self.directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel)
        self._events = events_pb2_grpc.EventsServiceStub(channel)
        self.queue: asyncio.Queue[events_pb2.Event] = asyncio.Queue()
        self.last_seq = 0
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def login(cls, core: Core, channel: grpc.aio.Channel, username: str, *, connect: bool = True) -> Device:
        device = cls(core, channel, await login(channel, username))
        if connect:
            await device.connect()
        return device

    async def online(self) -> bool:
        return self.session.session_id in await self.core.devices.online_devices(self.username)

    async def connect(self) -> None:
        """Open the event stream and wait until the core counts the device online."""
        self._call = self._events.Subscribe(
            events_pb2.SubscribeRequest(after_seq=self.last_seq), metadata=self.metadata
        )
        self._reader = asyncio.create_task(self._read(self._call))
        await eventually(self.online)

    async def disconnect(self) -> None:
        """Close the event stream (the device stays online for the grace period)."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._call = self._reader = None

    async def _read(self, call: Any) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in call:
                self.last_seq = event.seq
                self.queue.put_nowait(event)

    async def set(self, status: Any, note: str = "") -> presence_pb2.Presence:
        return await self.presence.SetPresence(
            presence_pb2.SetPresenceRequest(status=status, note=note), metadata=self.metadata
        )

    async def get(self, username: str) -> presence_pb2.Presence:
        return await self.presence.GetPresence(
            presence_pb2.GetPresenceRequest(username=username), metadata=self.metadata
        )

    async def next_event(self, kind: str, timeout: float | None = None) -> events_pb2.Event:
        """The next event with ``kind`` set, skipping others."""
        deadline = time.monotonic() + (timeout if timeout is not None else seconds())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.username}: no {kind} event in time")
            try:
                event = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                raise AssertionError(f"{self.username}: no {kind} event in time") from None
            if event.HasField(kind):
                return event

    async def next_presence(self, username: str, timeout: float | None = None) -> presence_pb2.Presence:
        """The next presenceChanged of ``username``, skipping others."""
        while True:
            event = await self.next_event("presence_changed", timeout)
            if event.presence_changed.username == username:
                return event.presence_changed

    async def presence_until(self, username: str, status: int) -> presence_pb2.Presence:
        """Skip presenceChanged events of ``username`` until one has ``status``."""
        while True:
            presence = await self.next_presence(username)
            if presence.status == status:
                return presence

    async def heard_before_own_change(self, note: str = "sentinel") -> list[presence_pb2.Presence]:
        """The presenceChanged events this device gets before a change of its
        own subscriber, published now (AWAY with ``note``). Whatever was
        emitted before this call comes first in the stream, so an event not
        among these was never sent: no waiting to prove that nothing comes."""
        await self.set(Status.AWAY, note)
        heard: list[presence_pb2.Presence] = []
        while True:
            presence = (await self.next_event("presence_changed")).presence_changed
            if presence.username == self.username and presence.note == note:
                return heard
            heard.append(presence)

    async def drain(self) -> list[events_pb2.Event]:
        """Every event published to this device so far: those that arrive
        before a marker published to its stream now (the stream keeps the
        log's order), so no waiting proves that no other is on its way."""
        marker = f"drain-marker-{next(_MARKERS)}"
        event = events_pb2.Event(
            contact_changed=events_pb2.ContactChanged(contact=contacts_pb2.Contact(contact_id=marker))
        )
        await self.core.events.publish_to_sessions([self.session.session_id], event)
        out: list[events_pb2.Event] = []
        while True:
            try:
                got = await asyncio.wait_for(self.queue.get(), seconds())
            except TimeoutError:
                raise AssertionError(f"{self.username}: the stream is not delivering") from None
            if got.contact_changed.contact.contact_id == marker:
                return out
            out.append(got)

    async def logout(self) -> None:
        await self.identity.Logout(identity_pb2.LogoutRequest(), metadata=self.metadata)
