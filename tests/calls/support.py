"""Call test helpers: devices that are online (a Login session with an open
Subscribe stream) and collect their call events, so that a test asserts each
device's exact sequence of call events.

The calls suite's worlds run on a fake clock (tests/support/clock.py): no
timer of the core fires (ring timeout, device grace) unless a test advances
the clock, so "nothing else arrives" needs no waiting, only a marker sent
down the device's stream behind whatever is still in flight
(``Device.quiet``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.devices import LocalDeviceRegistry
from core.cluster.redis_devices import RedisDeviceRegistry
from core.server import Core, build_core
from tests.support.clock import FakeClock
from tests.support.core import add_subscriber, api_key, login, test_config
from tests.support.timing import seconds
from wac.v1 import calls_pb2, calls_pb2_grpc, contacts_pb2, events_pb2, events_pb2_grpc

SDP = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
)
VIDEO_SDP = SDP + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"

OFFER = calls_pb2.SessionDescription.OFFER
ANSWER = calls_pb2.SessionDescription.ANSWER
Call = calls_pb2.Call

# The Event payloads that belong to calls; a device ignores the others
# (presence, contacts), which other services may send at any time.
CALL_EVENTS = frozenset(
    {"call_invited", "call_ringing", "call_answered", "call_updated", "ice_candidate", "call_ended"}
)

# Alice and Bob have the default "user" role; Vic's role lacks call.video,
# Pat's ("pstn") lacks every call permission.
ROLES_TOML = '[roles.voice]\npermissions = ["call.audio"]\n'
PEOPLE = {"alice": "Alice Liddell", "bob": "Bob Dylan", "carol": "Carol King", "vic": "Vic", "pat": "Pat"}

# The ids of the markers Device.quiet sends down a stream: contact changes no
# contact of a real subscriber can have.
_MARKERS = (f"quiet-marker-{n}" for n in itertools.count())


def description(kind: int = OFFER, sdp: str = SDP) -> calls_pb2.SessionDescription:
    return calls_pb2.SessionDescription(type=kind, sdp=sdp)  # type: ignore[arg-type]


async def fails(code: grpc.StatusCode, call: Awaitable[Any], match: str = "") -> grpc.aio.AioRpcError:
    """Await ``call`` and assert it fails with ``code`` and a message containing ``match``."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    assert match in (error.details() or ""), error.details()
    return error


async def eventually(check: Any, timeout: float | None = None) -> Any:
    """Poll an async or plain predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + (timeout or seconds())
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@dataclass
class Device:
    """One logged-in device of a subscriber, online while its stream is open."""

    username: str
    session_id: str
    token: str
    channel: grpc.aio.Channel
    core: Core
    inbox: asyncio.Queue[events_pb2.Event] = field(default_factory=asyncio.Queue)
    _stream: Any = None
    _reader: asyncio.Task[None] | None = None
    _markers: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def calls(self) -> calls_pb2_grpc.CallsServiceStub:
        return calls_pb2_grpc.CallsServiceStub(self.channel)

    # -- the event stream ---------------------------------------------
    async def connect(
        self, channel: grpc.aio.Channel | None = None, core: Core | None = None, *, wait: bool = True
    ) -> None:
        """Open the Subscribe stream (on a new channel after a restart) and wait until online."""
        if channel is not None:
            self.channel = channel
        if core is not None:
            self.core = core
        stub = events_pb2_grpc.EventsServiceStub(self.channel)
        self._stream = stub.Subscribe(events_pb2.SubscribeRequest(), metadata=self.metadata)
        self._reader = asyncio.create_task(self._read(self._stream))
        if wait:
            await eventually(self._connected)

    def _connected(self) -> bool:
        # Open streams, not "online": a device in its grace period is online
        # with none, and its grace timer is cancelled only when one opens.
        registry = self.core.devices
        assert isinstance(registry, LocalDeviceRegistry | RedisDeviceRegistry)
        return registry.streams(self.username, self.session_id) > 0

    # The kinds of event this device collects in its inbox (a subclass
    # collects another service's).
    collects: ClassVar[frozenset[str]] = CALL_EVENTS

    async def _read(self, stream: Any) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in stream:
                kind = event.WhichOneof("payload")
                if kind in self.collects:
                    await self.inbox.put(event)
                elif kind == "contact_changed":
                    marker = self._markers.pop(event.contact_changed.contact.contact_id, None)
                    if marker is not None and not marker.done():
                        marker.set_result(None)

    async def disconnect(self, *, wait: bool = True) -> None:
        """Close the stream, as a browser tab that goes away does; unless
        ``wait`` is False, until the core has seen it close (its grace
        timer is running: the fake clock can be moved past it)."""
        if self._stream is not None:
            self._stream.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._stream = self._reader = None
        if wait:
            await eventually(lambda: not self._connected())

    async def next(self, timeout: float | None = None) -> events_pb2.Event:
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout or seconds())
        except TimeoutError:
            raise AssertionError(f"{self.username}/{self.session_id[:6]}: no call event came") from None

    async def expect(self, *kinds: str) -> list[Any]:
        """The next events must be exactly these kinds, in order; their payloads."""
        payloads = []
        for kind in kinds:
            event = await self.next()
            got = event.WhichOneof("payload")
            assert got == kind, f"{self.username}: expected {kind}, got {got}: {event}"
            payloads.append(getattr(event, kind))
        return payloads

    async def quiet(self) -> None:
        """No further call event is on its way to this device: a marker
        published to its stream now comes after every event published
        before it, and arrives with none of them left unread. (Events that
        timers would publish later are held back by the fake clock.)"""
        marker = next(_MARKERS)
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = arrived
        event = events_pb2.Event(
            contact_changed=events_pb2.ContactChanged(contact=contacts_pb2.Contact(contact_id=marker))
        )
        await self.core.events.publish_to_sessions([self.session_id], event)
        try:
            await asyncio.wait_for(arrived, seconds())
        except TimeoutError:
            raise AssertionError(f"{self.username}/{self.session_id[:6]}: the stream is not delivering") from None
        finally:
            self._markers.pop(marker, None)
        assert self.inbox.empty(), f"{self.username}: unexpected {self.inbox.get_nowait()}"

    # -- calls --------------------------------------------------------
    async def create(self, callee: str, *, video: bool = False, sdp: str | None = None) -> calls_pb2.Call:
        request = calls_pb2.CreateCallRequest(
            callee=callee,
            offer=description(OFFER, sdp or (VIDEO_SDP if video else SDP)),
            media=calls_pb2.Media(audio=True, video=video),
        )
        return await self.calls.CreateCall(request, metadata=self.metadata)

    async def answer(self, call_id: str, sdp: str = SDP) -> calls_pb2.Call:
        request = calls_pb2.AnswerCallRequest(call_id=call_id, answer=description(ANSWER, sdp))
        return await self.calls.AnswerCall(request, metadata=self.metadata)

    async def reject(self, call_id: str, *, busy: bool = False) -> calls_pb2.Call:
        reason = calls_pb2.RejectCallRequest.BUSY if busy else calls_pb2.RejectCallRequest.DECLINED
        request = calls_pb2.RejectCallRequest(call_id=call_id, reason=reason)
        return await self.calls.RejectCall(request, metadata=self.metadata)

    async def hangup(self, call_id: str) -> calls_pb2.Call:
        request = calls_pb2.HangupCallRequest(call_id=call_id)
        return await self.calls.HangupCall(request, metadata=self.metadata)

    async def ice(self, call_id: str, candidate: str | None = CANDIDATE) -> None:
        request = calls_pb2.SendIceCandidateRequest(call_id=call_id)
        if candidate is None:
            request.end_of_candidates = True
        else:
            request.candidate.CopyFrom(calls_pb2.IceCandidate(candidate=candidate, sdp_mid="0", username_fragment="uf"))
        await self.calls.SendIceCandidate(request, metadata=self.metadata)

    async def renegotiate(self, call_id: str, kind: int, sdp: str = SDP) -> calls_pb2.Call:
        request = calls_pb2.RenegotiateRequest(call_id=call_id, description=description(kind, sdp))
        return await self.calls.Renegotiate(request, metadata=self.metadata)

    async def get(self, call_id: str) -> calls_pb2.Call:
        request = calls_pb2.GetCallRequest(call_id=call_id)
        return await self.calls.GetCall(request, metadata=self.metadata)

    async def list(self, **fields: Any) -> calls_pb2.ListCallsResponse:
        request = calls_pb2.ListCallsRequest(**fields)
        return await self.calls.ListCalls(request, metadata=self.metadata)


@dataclass
class Service:
    """A SAPI caller with an API key."""

    key: str
    channel: grpc.aio.Channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    @property
    def calls(self) -> calls_pb2_grpc.CallsServiceStub:
        return calls_pb2_grpc.CallsServiceStub(self.channel)


@dataclass
class World:
    """A real core; its cast (alice, bob, carol; vic with voice only; pat
    with the pstn role and no call permission) is created on first use."""

    data_dir: Path
    env: Mapping[str, str]
    core: Core
    channel: grpc.aio.Channel
    clock: Clock
    devices: list[Device] = field(default_factory=list)
    subscribers: set[str] = field(default_factory=set)

    async def subscriber(self, username: str) -> None:
        """Create one of the cast on first use (password hashing is slow on purpose)."""
        if username in self.subscribers:
            return
        roles = {"vic": ["voice"], "pat": ["pstn"]}.get(username, ["user"])
        await add_subscriber(self.core, username, display_name=PEOPLE[username], roles=roles)
        self.subscribers.add(username)

    async def device(self, username: str, name: str = "web", *, wait: bool = True) -> Device:
        """A logged-in device with its stream open; online unless ``wait`` is False."""
        await self.subscriber(username)
        session = await login(self.channel, username, device=name)
        device = Device(username, session.session_id, session.access_token, self.channel, self.core)
        await device.connect(wait=wait)
        self.devices.append(device)
        return device

    async def advance(self, seconds: float) -> None:
        """Move the core's clock forward (a world opened with a fake one)."""
        assert isinstance(self.clock, FakeClock), "this world runs on the system clock"
        await self.clock.advance(seconds)

    async def service(self, name: str, *scopes: str) -> Service:
        return Service(await api_key(self.core, name, *scopes), self.channel)

    async def restart(self, *, before_start: Awaitable[None] | None = None) -> None:
        """Stop the core (devices drop), optionally wait, and start a new one on the same data."""
        for device in self.devices:
            await device.disconnect(wait=False)
        await self.core.stop(0.2)
        await self.channel.close()
        if before_start is not None:
            await before_start
        self.core = await build_core(test_config(self.data_dir, self.env), clock=self.clock)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.core.port}")
        for device in self.devices:
            device.channel, device.core = self.channel, self.core

    async def close(self) -> None:
        for device in self.devices:
            await device.disconnect(wait=False)
        await self.core.stop(0.2)
        await self.channel.close()


@asynccontextmanager
async def open_world(
    tmp_path: Path, env: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[World]:
    roles = tmp_path / "roles.toml"
    roles.write_text(ROLES_TOML)
    full_env = {"WAC_CONFIG": str(roles), **(env or {})}
    data_dir = tmp_path / "data"
    core = await build_core(test_config(data_dir, full_env), clock=clock)
    world = World(data_dir, full_env, core, grpc.aio.insecure_channel(f"127.0.0.1:{core.port}"), clock)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(world.close)
        yield world
