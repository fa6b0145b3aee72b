"""EdgeStreamService.StreamEvents (wac.internal.v1) against a real core: many sessions' event
streams over one gRPC stream, opened with the hop key (the edge's
credential), each attachment authorised by its own token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from core.server import Core
from settings.config import PresenceConfig
from tests.support.clock import FakeClock
from tests.support.core import add_subscriber, api_key, login, running_core
from wac.internal.v1 import stream_pb2, stream_pb2_grpc
from wac.v1 import events_pb2, identity_pb2, identity_pb2_grpc, presence_pb2, presence_pb2_grpc

Request = stream_pb2.StreamEventsRequest
Delivery = stream_pb2.StreamEventsResponse.Delivery
Status = presence_pb2.Presence.Status


class Mux:
    """One StreamEvents call: attach and detach, and the deliveries by subscription."""

    def __init__(self, channel: grpc.aio.Channel, credential: str) -> None:
        self.call = stream_pb2_grpc.EdgeStreamServiceStub(channel).StreamEvents(metadata=md(credential))
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            for delivery in response.deliveries:
                self.deliveries.put_nowait(delivery)

    async def attach(self, key: int, token: str, after_seq: int = 0) -> None:
        await self.call.write(Request(attach=Request.Attach(subscription=key, access_token=token, after_seq=after_seq)))

    async def detach(self, key: int) -> None:
        await self.call.write(Request(detach=Request.Detach(subscription=key)))

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.deliveries.get(), 5)

    async def presence_note(self, key: int, note: str) -> events_pb2.Event:
        """The event to ``key`` that carries this presence note (opening a
        stream brings the device online, which is an event of its own first)."""
        while True:
            event = (await self.next_for(key, "event")).event
            if event.presence_changed.note == note:
                return event

    async def next_for(self, key: int, outcome: str) -> Delivery:
        """The next delivery to ``key`` with this outcome (skipping others' deliveries)."""
        while True:
            delivery = await self.next()
            if delivery.subscription == key and delivery.WhichOneof("outcome") == outcome:
                return delivery


@asynccontextmanager
async def mux(channel: grpc.aio.Channel, credential: str) -> AsyncIterator[Mux]:
    stream = Mux(channel, credential)
    try:
        yield stream
    finally:
        stream.call.cancel()
        await asyncio.gather(stream.reader, return_exceptions=True)


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def set_status(channel: grpc.aio.Channel, token: str, status: int, note: str = "") -> None:
    await presence_pb2_grpc.PresenceServiceStub(channel).SetPresence(
        presence_pb2.SetPresenceRequest(status=status, note=note), metadata=md(token)
    )


async def test_two_sessions_on_one_stream_each_get_their_own_events(core: Core, channel: grpc.aio.Channel) -> None:
    await add_subscriber(core, "alice")
    await add_subscriber(core, "bob")
    alice, bob = await login(channel, "alice"), await login(channel, "bob")
    async with mux(channel, core.hop_key) as stream:
        await stream.attach(1, alice.access_token)
        await stream.attach(2, bob.access_token)
        accepted: set[int] = set()
        while accepted != {1, 2}:  # each session's own presence event may come in between
            delivery = await stream.next()
            if delivery.WhichOneof("outcome") == "accepted":
                accepted.add(delivery.subscription)
            else:
                assert delivery.WhichOneof("outcome") == "event"
        await set_status(channel, alice.access_token, Status.AWAY, "lunch")
        event = await stream.presence_note(1, "lunch")
        assert event.presence_changed.username == "alice"
        assert event.seq >= 1
        # Bob does not see alice (not a contact): none of his events is hers.
        await set_status(channel, bob.access_token, Status.BUSY, "meeting")
        seen: list[str] = []
        while "meeting" not in seen:
            change = (await stream.next_for(2, "event")).event.presence_changed
            assert change.username == "bob"
            seen.append(change.note)


async def test_a_bad_token_is_refused_with_its_status_and_the_stream_carries_on(
    core: Core, channel: grpc.aio.Channel
) -> None:
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    async with mux(channel, core.hop_key) as stream:
        await stream.attach(7, "not.a.token")
        refused = await stream.next()
        assert refused.subscription == 7
        assert refused.WhichOneof("outcome") == "ended"
        assert refused.ended.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert refused.ended.message
        await stream.attach(11, "a\x00b")
        nul = await stream.next()
        assert (nul.subscription, nul.ended.code) == (11, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        assert nul.ended.message == "attach.access_token: must not contain NUL characters (U+0000)"
        await stream.attach(8, "")
        empty = await stream.next()
        assert (empty.subscription, empty.ended.code) == (8, grpc.StatusCode.UNAUTHENTICATED.value[0])
        # An API key is not a session: no event stream for it.
        key = await api_key(core, "gateway", "identity.verify")
        await stream.attach(9, key)
        service = await stream.next()
        assert (service.subscription, service.ended.code) == (9, grpc.StatusCode.PERMISSION_DENIED.value[0])
        await stream.attach(10, alice.access_token)
        await stream.next_for(10, "accepted")


async def test_a_duplicate_subscription_key_and_an_expired_seq_are_refused(
    core: Core, channel: grpc.aio.Channel
) -> None:
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    async with mux(channel, core.hop_key) as stream:
        await stream.attach(1, alice.access_token)
        await stream.next_for(1, "accepted")
        await stream.attach(1, alice.access_token)
        duplicate = await stream.next_for(1, "ended")
        assert (duplicate.subscription, duplicate.ended.code) == (1, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        assert "already live" in duplicate.ended.message
        await stream.attach(2, alice.access_token, after_seq=1000)
        expired = await stream.next_for(2, "ended")
        assert (expired.subscription, expired.ended.code) == (2, grpc.StatusCode.OUT_OF_RANGE.value[0])
        assert "reload your state" in expired.ended.message
        await stream.attach(3, alice.access_token, after_seq=-1)
        negative = await stream.next_for(3, "ended")
        assert (negative.subscription, negative.ended.code) == (3, grpc.StatusCode.INVALID_ARGUMENT.value[0])


async def test_resume_after_detach_gets_the_missed_events_once(tmp_path: Path) -> None:
    clock = FakeClock()  # moved past each presence coalescing window
    window = PresenceConfig().coalesce_ms / 1000
    async with (
        running_core(tmp_path / "data", clock=clock) as core,
        grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel,
    ):
        await add_subscriber(core, "alice")
        alice = await login(channel, "alice")
        async with mux(channel, core.hop_key) as stream:
            await stream.attach(1, alice.access_token)
            await stream.next_for(1, "accepted")
            await set_status(channel, alice.access_token, Status.AWAY, "one")
            await clock.advance(window)
            first = await stream.presence_note(1, "one")
            await stream.detach(1)
            await set_status(channel, alice.access_token, Status.BUSY, "two")
            await clock.advance(window)
            await set_status(channel, alice.access_token, Status.DO_NOT_DISTURB, "three")
            await clock.advance(window)
            await stream.attach(2, alice.access_token, after_seq=first.seq)
            await stream.next_for(2, "accepted")
            notes = []
            seqs = []
            while "three" not in notes:
                event = (await stream.next_for(2, "event")).event
                notes.append(event.presence_changed.note)
                seqs.append(event.seq)
            assert notes == ["two", "three"]
            assert seqs == [first.seq + 1, first.seq + 2]


async def test_revocation_ends_the_subscription_with_ok_after_the_revoked_event(
    core: Core, channel: grpc.aio.Channel
) -> None:
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    async with mux(channel, core.hop_key) as stream:
        await stream.attach(5, alice.access_token)
        await stream.next_for(5, "accepted")
        await identity_pb2_grpc.IdentityServiceStub(channel).Logout(
            identity_pb2.LogoutRequest(), metadata=md(alice.access_token)
        )
        outcomes = []
        while not outcomes or outcomes[-1] != "ended":
            delivery = await stream.next()
            assert delivery.subscription == 5
            outcomes.append(delivery.WhichOneof("outcome"))
            if outcomes[-1] == "ended":
                assert delivery.ended.code == 0
            else:
                last_event = delivery.event
        assert last_event.WhichOneof("payload") == "session_revoked"


async def test_the_stream_ends_when_the_edge_stops_writing(core: Core, channel: grpc.aio.Channel) -> None:
    await add_subscriber(core, "alice")
    alice = await login(channel, "alice")
    stream = Mux(channel, core.hop_key)
    await stream.attach(1, alice.access_token)
    await stream.next_for(1, "accepted")
    await stream.call.done_writing()
    await asyncio.wait_for(stream.reader, 5)
    assert await stream.call.code() == grpc.StatusCode.OK
