"""Faults on a running cluster (`wac cluster`: two cores, two edges, Envoy)
on PostgreSQL and Redis servers of this module's own, which the tests stop
and restart:

- kill -9 the core that owns a call: an answered call goes on and can be
  hung up; a ringing one still times out as configured;
- kill -9 an edge: its clients reconnect through Envoy to the other edge
  and resume with no event lost;
- restart Redis (its data gone): the nodes reconnect by themselves, and the
  clients whose events could not be kept are told to resynchronise, never
  left with a silent gap;
- PostgreSQL down for a few seconds: requests fail with UNAVAILABLE and
  succeed again after, nothing half-written.

The clients are what the SDK does, in Python: on a dropped socket they
reconnect with their access token and subscribe after the last seq they
saw; an OUT_OF_RANGE answer means "resynchronise" (the SDK's `resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis as redis_sync
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.calls.support import SDP
from tests.support.postgres import Postgres, require_postgres
from tests.support.redis import Redis, require_redis
from tests.support.server import throwaway
from tests.support.timing import seconds
from tests.support.wac_cluster import Cluster, all_healthy, running_cluster, wait_for
from tests.wapi.support import WapiClient

RING_TIMEOUT = 6.0
LEASE_SECONDS = 2.0
GRACE_PERIOD = 20.0
UNAVAILABLE = 14
OUT_OF_RANGE = 11


@dataclass
class Servers:
    postgres: Postgres
    database: str
    redis: Redis


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """This module's own PostgreSQL and Redis: the tests stop and restart them."""
    pg_bin = require_postgres()
    redis_program = require_redis()
    with (
        throwaway(lambda directory: Postgres(directory, pg_bin), "wac-fault-pg-") as postgres,
        throwaway(lambda directory: Redis(directory, redis_program), "wac-fault-redis-") as redis,
    ):
        yield Servers(postgres, postgres.create_database(), redis)


@pytest.fixture(scope="module")
def cluster(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {
        "WAC_CORE_DATABASE_URL": servers.postgres.url(servers.database),
        "WAC_CLUSTER_REDIS_URL": servers.redis.url(0),
        "WAC_CLUSTER_LEASE_SECONDS": str(LEASE_SECONDS),
        "WAC_CLUSTER_HEARTBEAT_SECONDS": "0.5",
        "WAC_CALLS_RING_TIMEOUT": str(RING_TIMEOUT),
        # Longer than any test: a device is never lost while its client reconnects.
        "WAC_PRESENCE_GRACE_PERIOD": str(GRACE_PERIOD),
    }
    with running_cluster(tmp_path_factory.mktemp("faults"), "--demo", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def passwords(cluster: Cluster) -> dict[str, str]:
    lines = (cluster.data / "demo-credentials.txt").read_text().splitlines()
    return dict(line.split("\t") for line in lines)


class Party:
    """One subscriber's device through the front door, reconnecting and
    resuming as the SDK does. ``events`` is everything delivered, in order;
    ``gaps`` the seqs that did not follow their predecessor."""

    def __init__(self, cluster: Cluster, username: str, password: str) -> None:
        self.url = f"ws://127.0.0.1:{cluster.front}/wapi"
        self.username = username
        self.password = password
        self.client: WapiClient | None = None
        self.token = ""
        self.session = ""
        self.last = 0
        self.events: list[dict[str, Any]] = []
        self.gaps: list[tuple[int, int]] = []
        self.reconnects = 0
        self.resyncs = 0
        # Requests sent again after their socket dropped under them.
        self.resent = 0

    async def start(self) -> None:
        ws = await connect(self.url, open_timeout=seconds())
        self.client = WapiClient(ws)
        session = await self.client.login(self.username, self.password)
        self.token, self.session = session["accessToken"], session["sessionId"]
        await self._subscribe()

    async def close(self) -> None:
        """Log out, then close: a device merely closed stays online for
        GRACE_PERIOD with its last status, which would outrank the next
        test's (AVAILABLE 'here' beats AWAY: core/presence/rules.py)."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.request("IdentityService.Logout", {}), seconds())
            await self.client.ws.close()

    async def _subscribe(self) -> None:
        assert self.client is not None
        answer = await self.client.request("EventsService.Subscribe", {"afterSeq": str(self.last)})
        if "error" in answer and answer["error"]["code"] == OUT_OF_RANGE:
            # The SDK's resync: reload state, start again from the beginning.
            self.resyncs += 1
            self.last = 0
            answer = await self.client.request("EventsService.Subscribe", {"afterSeq": "0"})
        assert "result" in answer, answer

    async def _reconnect(self) -> None:
        """Back through the front door with the token, until it takes
        (Envoy needs a moment to see a dead edge as unhealthy)."""
        self.reconnects += 1
        deadline = time.monotonic() + seconds(4)
        while True:
            try:
                ws = await connect(f"{self.url}?access_token={quote(self.token)}", open_timeout=seconds())
                self.client = WapiClient(ws)
                await self._subscribe()
                return
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidStatus, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One request; a dropped socket reconnects first (the request is resent)."""
        while True:
            assert self.client is not None
            try:
                return await self.client.request(method, params)
            except ConnectionClosed:
                await self._reconnect()
                self.resent += 1

    async def result(self, method: str, params: dict[str, Any], *, retry_unavailable: float = 0.0) -> Any:
        """The result; UNAVAILABLE answers are retried for up to ``retry_unavailable`` seconds."""
        deadline = time.monotonic() + retry_unavailable
        while True:
            answer = await self.request(method, params)
            if "result" in answer:
                return answer["result"]
            if answer["error"]["code"] != UNAVAILABLE or time.monotonic() > deadline:
                raise AssertionError(f"{method}: {answer}")
            await asyncio.sleep(0.2)

    async def event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event, reconnecting and resuming across dropped sockets."""
        deadline = time.monotonic() + (seconds() if timeout is None else timeout)
        while True:
            assert self.client is not None
            try:
                event = await self.client.event(timeout=max(0.01, deadline - time.monotonic()))
            except ConnectionClosed:
                await self._reconnect()
                continue
            seq = int(event["seq"])
            # From after_seq 0 a log starts wherever it starts (not always 1).
            if self.last and seq != self.last + 1:
                self.gaps.append((self.last, seq))
            self.last = seq
            self.events.append(event)
            return event

    async def until(self, kind: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose payload has these fields."""
        deadline = time.monotonic() + (seconds() if timeout is None else timeout)
        while True:
            try:
                event = await self.event(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(
                    f"{self.username} got no {kind} {fields}; last events: {self.events[-5:]}"
                ) from None
            payload = event.get(kind)
            # Call events carry the call whole: match its id there.
            flat = {**payload.get("call", {}), **payload} if payload is not None else {}
            if payload is not None and all(flat.get(k) == v for k, v in fields.items()):
                return payload


@contextlib.asynccontextmanager
async def parties(cluster: Cluster, passwords: dict[str, str], *names: str) -> AsyncIterator[list[Party]]:
    started = [Party(cluster, name, passwords[name]) for name in names]
    try:
        for party in started:
            await party.start()
        yield started
    finally:
        for party in started:
            with contextlib.suppress(Exception):
                await party.close()


async def linked(alice: Party, bob: Party) -> None:
    """Each has the other as a contact, and bob sees alice online."""
    for party, other in ((alice, bob), (bob, alice)):
        listed = await party.result("ContactsService.ListContacts", {})
        if not any(c.get("subscriber") == other.username for c in listed.get("contacts", [])):
            await party.result(
                "ContactsService.CreateContact",
                {"contact": {"displayName": other.username, "subscriber": other.username}},
            )
    await alice.result("PresenceService.SetPresence", {"status": "AVAILABLE", "note": "here"})
    await bob.until("presenceChanged", username="alice", note="here")


def owner_of_call_or_none(servers: Servers, call_id: str) -> str | None:
    """The node holding the call's lease (core/cluster/redis_leases.py's key)."""
    with redis_sync.Redis.from_url(servers.redis.url(0)) as client:
        value = client.get(f"wac:lease:call:{call_id}")
    return None if value is None else str(value.decode().split(":", 1)[1])


def owner_of_call(servers: Servers, call_id: str) -> str:
    owner = owner_of_call_or_none(servers, call_id)
    assert owner, f"no core holds call {call_id}"
    return owner


def healthy_again(cluster: Cluster) -> None:
    """Wait until Envoy sees every core and edge healthy (a killed one restarted)."""
    wait_for(lambda: all_healthy(cluster), "every node healthy again", cluster, seconds(6))


async def test_a_killed_core_that_owns_an_answered_call(
    cluster: Cluster, servers: Servers, passwords: dict[str, str]
) -> None:
    async with parties(cluster, passwords, "alice", "bob") as (alice, bob):
        await linked(alice, bob)
        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": {"type": "OFFER", "sdp": SDP}})
        call_id = call["callId"]
        await bob.until("callInvited", callId=call_id)
        await bob.result("CallsService.AnswerCall", {"callId": call_id, "answer": {"type": "ANSWER", "sdp": SDP}})
        await alice.until("callAnswered", callId=call_id)

        owner = owner_of_call(servers, call_id)
        cluster.kill(owner)
        # The call goes on: readable, and hung up, through whichever core.
        # A request may meet the dead owner before its lease lapses: the
        # answer is then UNAVAILABLE, and a retry a moment later succeeds.
        got = await alice.result("CallsService.GetCall", {"callId": call_id}, retry_unavailable=LEASE_SECONDS + 3)
        assert got["state"] == "ACTIVE"
        answer = await alice.request("CallsService.HangupCall", {"callId": call_id})
        deadline = time.monotonic() + LEASE_SECONDS + 3
        while "error" in answer and answer["error"]["code"] == UNAVAILABLE and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            answer = await alice.request("CallsService.HangupCall", {"callId": call_id})
        if "error" in answer and alice.resent:
            # Her socket dropped under the hangup (its edge's stream to the
            # killed core ended): the hangup took effect, its resend found
            # the call ended. The call says how it ended.
            assert answer["error"]["message"] == "call has ended", answer
            answer = {"result": await alice.result("CallsService.GetCall", {"callId": call_id})}
        assert "result" in answer, answer
        ended = answer["result"]
        assert (ended.get("state"), ended.get("endReason"), ended.get("endedBy")) == ("ENDED", "COMPLETED", "alice"), (
            ended,
            alice.resent,
        )
        assert (await bob.until("callEnded", callId=call_id))["reason"] == "COMPLETED"
        # Released once the end is told (the parties may hear of it first),
        # or, if the killed owner still held it, lapsed: a live core that
        # kept it would renew it, and it would still be there.
        await asyncio.to_thread(
            wait_for,
            lambda: owner_of_call_or_none(servers, call_id) is None,
            "the ended call's lease released",
            cluster,
            LEASE_SECONDS + 1,
        )
        assert not alice.gaps and not bob.gaps, (alice.gaps, bob.gaps)
    healthy_again(cluster)


async def test_a_killed_core_that_owns_a_ringing_call(
    cluster: Cluster, servers: Servers, passwords: dict[str, str]
) -> None:
    async with parties(cluster, passwords, "alice", "bob") as (alice, bob):
        await linked(alice, bob)
        created = time.monotonic()
        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": {"type": "OFFER", "sdp": SDP}})
        call_id = call["callId"]
        await bob.until("callInvited", callId=call_id)
        cluster.kill(owner_of_call(servers, call_id))
        # Another core adopts the call and its deadline: NO_ANSWER for both,
        # not before the ring timeout, and not much after it.
        ended = await alice.until("callEnded", callId=call_id, timeout=RING_TIMEOUT + LEASE_SECONDS + seconds())
        took = time.monotonic() - created
        assert ended["reason"] == "NO_ANSWER", ended
        assert RING_TIMEOUT - 0.5 <= took <= RING_TIMEOUT + LEASE_SECONDS + 2.5, took
        assert (await bob.until("callEnded", callId=call_id))["reason"] == "NO_ANSWER"
        assert not alice.gaps and not bob.gaps, (alice.gaps, bob.gaps)
    healthy_again(cluster)


async def test_a_killed_edge_its_clients_resume_through_the_other(cluster: Cluster, passwords: dict[str, str]) -> None:
    async with parties(cluster, passwords, "alice") as (alice,):
        before = cluster.requests("wac_edge", cluster.edges)
        async with parties(cluster, passwords, "bob") as (bob,):
            after = cluster.requests("wac_edge", cluster.edges)
            bobs = [index for index, (now, then) in enumerate(zip(after, before, strict=True)) if now > then]
            assert len(bobs) == 1, (before, after)
            await linked(alice, bob)
            cluster.kill(f"edge-{bobs[0] + 1}")
            # alice changes while bob is away, then he comes back (through
            # the other edge: the killed one is down or restarting).
            notes = [f"note {n}" for n in range(5)]
            for note in notes:
                await alice.result("PresenceService.SetPresence", {"status": "AWAY", "note": note})
                await asyncio.sleep(0.3)  # past the coalescing window: each change is its own event
            seen = await bob.until("presenceChanged", username="alice", note=notes[-1], timeout=seconds(3))
            assert seen["status"] == "AWAY"
            assert bob.reconnects >= 1
            assert not bob.gaps and bob.resyncs == 0, (bob.gaps, bob.resyncs)
            # Every change reached him, once each, in order.
            heard = [
                e["presenceChanged"].get("note", "")
                for e in bob.events
                if e.get("presenceChanged", {}).get("username") == "alice"
            ]
            assert heard[-len(notes) :] == notes, heard
    healthy_again(cluster)


async def test_a_restarted_redis_nodes_reconnect_and_clients_resync(
    cluster: Cluster, servers: Servers, passwords: dict[str, str]
) -> None:
    async with parties(cluster, passwords, "alice", "bob") as (alice, bob):
        await linked(alice, bob)
        port = servers.redis.port
        servers.redis.stop()
        servers.redis.start(port)  # empty: nothing was persisted
        # bob's events after the loss cannot be resumed: he is told to
        # resynchronise, and from then on hears alice again. He notices
        # first, as the SDK does at once: a change made before his resync
        # reaches him by the resync's reload of state, not as an event.
        deadline = time.monotonic() + seconds(2)
        while not bob.resyncs and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await bob.event(timeout=0.2)
        await alice.result(
            "PresenceService.SetPresence", {"status": "BUSY", "note": "after"}, retry_unavailable=seconds()
        )
        seen = await bob.until("presenceChanged", username="alice", note="after", timeout=seconds(2))
        assert seen["status"] == "BUSY"
        assert bob.resyncs >= 1, "a client whose events were lost must be told to resynchronise"
        # A resync starts again from seq 1; nothing else skips.
        assert not bob.gaps, bob.gaps
    healthy_again(cluster)


async def test_postgres_down_requests_fail_unavailable_then_succeed(
    cluster: Cluster, servers: Servers, passwords: dict[str, str]
) -> None:
    async with parties(cluster, passwords, "alice") as (alice,):
        port = servers.postgres.port
        name = f"written while the database was down {time.monotonic_ns()}"
        servers.postgres.stop()
        try:
            answer = await alice.request("ContactsService.CreateContact", {"contact": {"displayName": name}})
            assert "error" in answer and answer["error"]["data"]["status"] == "UNAVAILABLE", answer
        finally:
            servers.postgres.start(port)
        made = await alice.result(
            "ContactsService.CreateContact", {"contact": {"displayName": name}}, retry_unavailable=seconds(2)
        )
        listed = await alice.result("ContactsService.ListContacts", {})
        # The refused write left nothing behind: one contact of that name, the one made after.
        assert [c["contactId"] for c in listed["contacts"] if c["displayName"] == name] == [made["contactId"]]
    healthy_again(cluster)


def test_postgres_down_the_cores_are_not_ready_and_envoy_stops_routing_to_them(
    cluster: Cluster, servers: Servers
) -> None:
    """Readiness, not liveness: both cores still answer, NOT_SERVING, and
    Envoy's gRPC health checks take them out until the database is back;
    the edges' /readyz fails with them, and Envoy's HTTP checks take the
    edges out. (With every host out, Envoy's panic mode still routes to all.)"""

    def all_out() -> bool:
        counters = cluster.counters()
        hosts = [("wac_core", core) for core in cluster.cores] + [
            (name, edge) for name in ("wac_edge", "wac_edge_http") for edge in cluster.edges_of(name)
        ]
        return all("failed_active_hc" in counters.get((name, host, "health_flags"), "") for name, host in hosts)

    def readyz() -> tuple[int, Any]:
        answer = httpx.get(f"http://127.0.0.1:{cluster.front}/readyz", timeout=seconds())
        return answer.status_code, answer.json()

    port = servers.postgres.port
    servers.postgres.stop()
    try:
        # The edges' /readyz fails with the cores' (database): out too.
        wait_for(all_out, "Envoy taking the cores and edges out", cluster, seconds(2))
        wait_for(lambda: readyz()[0] == 503, "/readyz 503", cluster, seconds())
        _status, body = readyz()
        assert body["checks"]["database"]["status"] == "fail", body
        assert body["checks"]["core"]["status"] == "pass", body
        assert body["checks"]["database"]["output"].startswith("unreachable"), body
        # Neither the address nor the credentials of the database.
        assert servers.postgres.url(servers.database) not in str(body) and str(port) not in str(body)
    finally:
        servers.postgres.start(port)
    healthy_again(cluster)
    assert readyz()[0] == 200
