"""Presence subjects in a cluster, on Redis and leases: the cluster's
implementation of ``core.presence.subjects.Subjects``.

- Ownership: a subject's coalescing and emission run on the core holding
  the lease ``presence:<username>`` (kept by the node's ``Keeper``). A core
  that applies a change to a subject it does not own hands it to the owner
  on the owner's channel ``wac:presence-dirty:<node>`` (pub/sub, one reader
  per core), and the owner re-aggregates, re-reading the rows only when the
  change wrote them (an in-call flip does not). A change whose
  owner is not listening (it died, its lease not lapsed yet) is tried again
  every heartbeat until some core owns the subject. A lease idle for
  ``idle`` seconds is released, so leases do not pile up; a lease lost moves
  the subject to whichever core next sees a change.
- In-call flags: the calls' own sets (``wac:incall:<username>``, see
  core/cluster/redis_call_sets.py): a subscriber is in a call while its set
  exists, so every core aggregates with the same flags and there is no
  second copy to keep in step.
- Online subscribers: the rows (``connected``), which every core writes; the
  device registry says which devices are online, cluster-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import redis.asyncio as redis

from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.leases import Keeper, Lease, Leases
from core.cluster.loops import end_if_stopping, stopping
from core.cluster.redis_call_sets import in_call_key
from core.presence.subjects import ChangeListener, ReleaseListener

log = logging.getLogger("wac.presence")

LEASE_PREFIX = "presence:"


def dirty_channel(node: str) -> str:
    return f"wac:presence-dirty:{node}"


class RedisSubjects:
    """Presence subjects owned by lease; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        keeper: Keeper,
        leases: Leases,
        *,
        online_usernames: Callable[[], Awaitable[Collection[str]]],
        lease_seconds: float,
        heartbeat_seconds: float,
        idle: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._client = client
        self._keeper = keeper
        self._leases = leases
        self._node = leases.node
        self._online_usernames = online_usernames
        self._ttl = lease_seconds
        self._heartbeat = heartbeat_seconds
        # Long enough that a busy subject keeps its owner, short enough that
        # a quiet one gives its lease (and its renewals) up.
        self._idle = 2 * lease_seconds if idle is None else idle
        self._clock = clock
        self._changed: list[ChangeListener] = []
        self._released: list[ReleaseListener] = []
        self._used: dict[str, float] = {}  # owned subject -> last claim (monotonic)
        self._orphans: dict[str, tuple[bool, bool]] = {}  # subject -> (force, rows), no owner listening
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._telling: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        return True

    # -- ownership ----------------------------------------------------
    async def claim(self, username: str) -> bool:
        name = LEASE_PREFIX + username
        if self._keeper.held(name) is None and await self._keeper.acquire(name, self._ttl) is None:
            return False
        self._used[username] = self._clock.monotonic()
        return True

    def holds(self, username: str) -> bool:
        return self._keeper.held(LEASE_PREFIX + username) is not None

    async def hand_over(self, username: str, *, force: bool, rows: bool = True) -> None:
        name = LEASE_PREFIX + username
        for _ in range(2):
            owner = await self._leases.owner(name)
            if owner is None:
                # Released meanwhile: take it, and apply the change once the
                # caller (holding the subject's lock) is done.
                if await self.claim(username):
                    self._tell_soon(username, force, rows)
                    return
                continue  # another core took it first: hand it to that one
            if owner != self._node:
                payload = json.dumps([username, force, rows], separators=(",", ":"))
                if await self._client.publish(dirty_channel(owner), payload):
                    return
            break
        # The owner is not listening: it died and its lease has not lapsed
        # yet (or this core lost it and Redis still names it); retried
        # every heartbeat until some core owns the subject.
        was_forced, had_rows = self._orphans.get(username, (False, False))
        self._orphans[username] = (was_forced or force, had_rows or rows)

    def on_change(self, listener: ChangeListener) -> None:
        self._changed.append(listener)

    def on_release(self, listener: ReleaseListener) -> None:
        self._released.append(listener)

    def lease_lost(self, lease: Lease) -> None:
        """Keeper's listener for ``presence:`` leases."""
        username = lease.name.removeprefix(LEASE_PREFIX)
        log.warning("presence: lost the ownership of %s", username)
        self._used.pop(username, None)
        self._tell_released(username)

    # -- shared flags: the calls' in-call sets ------------------------
    async def in_call(self, username: str) -> bool:
        return bool(await self._client.exists(in_call_key(username)))

    async def in_call_among(self, usernames: Collection[str]) -> set[str]:
        wanted = list(usernames)
        if not wanted:
            return set()
        async with self._client.pipeline(transaction=False) as pipe:
            for name in wanted:
                pipe.exists(in_call_key(name))
            flags = await pipe.execute()
        return {name for name, flag in zip(wanted, flags, strict=True) if flag}

    async def set_in_call(self, username: str, in_call: bool) -> bool:
        # The calls service changed its set already, and tells only when
        # the set gained its first call or lost its last.
        return True

    async def forget(self, username: str) -> None:
        pass  # a deleted subscriber's calls end, and their sets with them

    # The device registry holds which devices are online, cluster-wide, and
    # each core writes its devices' rows: nothing to keep here.
    def device_online(self, username: str, session_id: str) -> None:
        pass

    def device_lost(self, username: str, session_id: str) -> None:
        pass

    def is_online(self, username: str, session_id: str) -> bool:
        # Asked for a device that publishes before it has a row: its own
        # core writes the row as connected when its stream opens.
        return False

    async def online_usernames(self) -> Collection[str]:
        return await self._online_usernames()

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(dirty_channel(self._node))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name="presence-dirty-reader"),
            loop.create_task(self._tend(), name="presence-subjects"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._telling]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                await self._pubsub.aclose()
            self._pubsub = None
        # Released now, so another core takes them at once.
        for username in list(self._used):
            await self._release(username)

    # -- internals ----------------------------------------------------
    async def _read(self) -> None:
        while True:
            end_if_stopping()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (redis.RedisError, OSError):
                if stopping():
                    raise
                log.warning("presence: reading %s failed; retrying", dirty_channel(self._node), exc_info=True)
                await self._clock.sleep(self._heartbeat)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                username, force, rows = json.loads(message["data"])
            except (ValueError, TypeError):
                log.warning("presence: malformed hand-over %r", message["data"])
                continue
            self._tell_soon(str(username), bool(force), bool(rows))

    async def _tend(self) -> None:
        while True:
            end_if_stopping()
            await self._clock.sleep(self._heartbeat)
            try:
                await self._tend_once()
            except (redis.RedisError, OSError):
                if stopping():
                    raise
                log.warning("presence: tending subjects failed", exc_info=True)

    async def _tend_once(self) -> None:
        orphans, self._orphans = self._orphans, {}
        for username, (force, rows) in orphans.items():
            self._tell_soon(username, force, rows)
        now = self._clock.monotonic()
        for username, used in list(self._used.items()):
            if now - used >= self._idle:
                await self._release(username)

    async def _release(self, username: str) -> None:
        self._used.pop(username, None)
        await self._keeper.release(LEASE_PREFIX + username)
        self._tell_released(username)

    def _tell_released(self, username: str) -> None:
        for listener in self._released:
            try:
                listener(username)
            except Exception:
                log.exception("presence: release listener failed for %s", username)

    def _tell_soon(self, username: str, force: bool, rows: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            self._tell(username, force, rows), name=f"presence-change-{username}"
        )
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _tell(self, username: str, force: bool, rows: bool) -> None:
        for listener in self._changed:
            try:
                await listener(username, force, rows)
            except Exception:
                log.exception("presence: applying the change handed over for %s failed", username)
