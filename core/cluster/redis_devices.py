"""The cluster's device registry, on Redis: the online/grace state every core
sees, with heartbeats, so a dead core's devices go through their grace
period on another core instead of staying online for ever.

Keys (one Redis, not Redis Cluster: the scripts touch keys of several users):

- ``wac:devices:<username>``, a hash: session -> JSON
  ``{"nodes": {node: streams}, "grace": until, "seen": time}``. A device
  may hold streams on several nodes at once (two tabs through two edges to
  two cores), so the streams are counted per node; ``grace`` is when its
  grace period ends (0 while some node holds a stream). A node writes its
  own count as it is (not +1/-1), one write at a time per device, so no
  write overtakes another on the pool's connections, and a node re-asserts
  all its counts after its heartbeat lapsed (a pause, a restarted Redis)
  without counting twice.
- ``wac:node:<id>``: the node's heartbeat, with a TTL; ``wac:nodes``: the
  nodes that ever beat (what a sweep looks through);
  ``wac:node:<id>:devices``: the devices with streams on that node.
- ``wac:graces``, a sorted set of the devices in grace by when it ends: a
  sweep finds the graces a dead node's timers would have ended.

Every change of a device is one Lua script (``ended`` one transaction
around an HDEL), so two nodes never both see a device come online nor both
tell it lost: what removes it says so to exactly one caller. Times are the nodes' clocks (``Clock.time``),
whose skew is small beside a grace period.

Each node ends the graces it starts on its own Clock timers; ``sweep()``
(run by one node at a time, under a lease) puts the devices of nodes whose
heartbeat is gone through their grace period, as if their streams had
closed when the sweep saw it, and ends the graces no live node ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as redis

from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.cluster.devices import DeviceListener, DeviceListeners
from core.cluster.loops import end_if_stopping, stopping

log = logging.getLogger("wac.devices")

NODES = "wac:nodes"
GRACES = "wac:graces"

# What _HOLD answers.
_NOTHING, _CAME_ONLINE, _GRACE_STARTED = 0, 1, 2

# KEYS: the user's devices, the node's devices, GRACES, the node's heartbeat.
# ARGV: session, node, now, member, streams, grace period, sweep.
# Sets the node's stream count of the device; a sweep (ARGV[7] == "1")
# removes a node's count, and only while that node's heartbeat is gone.
_HOLD = """
local session, node, now, member = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local streams, sweep = tonumber(ARGV[5]), ARGV[7] == '1'
if sweep and redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local raw = redis.call('HGET', KEYS[1], session)
local result = 0
local device
if raw then
  device = cjson.decode(raw)
elseif streams > 0 then
  device = {nodes = {}, grace = 0, seen = now}
  result = 1
else
  redis.call('SREM', KEYS[2], member)
  return 0
end
if sweep and not device.nodes[node] then return 0 end
if streams > 0 then
  device.nodes[node] = streams
  redis.call('SADD', KEYS[2], member)
else
  device.nodes[node] = nil
  redis.call('SREM', KEYS[2], member)
end
device.seen = now
if next(device.nodes) == nil then
  if device.grace == 0 then
    device.grace = now + tonumber(ARGV[6])
    redis.call('ZADD', KEYS[3], device.grace, member)
    result = 2
  end
elseif device.grace ~= 0 then
  device.grace = 0
  redis.call('ZREM', KEYS[3], member)
end
redis.call('HSET', KEYS[1], session, cjson.encode(device))
return result
"""

# KEYS: the user's devices, GRACES. ARGV: session, now, member.
# 1: lost now (the caller tells); 0: gone already or held again; a string:
# the seconds of grace left.
_EXPIRE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
local device = cjson.decode(raw)
if next(device.nodes) ~= nil or device.grace == 0 then return 0 end
local left = device.grace - tonumber(ARGV[2])
if left > 0 then return tostring(left) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: the node's heartbeat, its devices, NODES. ARGV: node.
_FORGET_NODE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


def devices_key(username: str) -> str:
    return f"wac:devices:{username}"


def node_key(node: str) -> str:
    return f"wac:node:{node}"


def node_devices_key(node: str) -> str:
    return f"wac:node:{node}:devices"


def _member(username: str, session_id: str) -> str:
    # JSON: a username or session id may hold any character.
    return json.dumps([username, session_id], separators=(",", ":"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class _Turn:
    """The writes of one device waiting to be sent, one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: int = 0


class RedisDeviceRegistry:
    """The cluster's registry: this node's streams, everyone's devices.

    ``node`` is this process's id (core/cluster/node.py); the core calls
    ``heartbeat()`` every ``heartbeat_interval`` seconds (or runs
    ``keep_alive()``), and the node is dead to the others once its heartbeat
    is ``node_ttl`` old (default: three intervals).
    """

    def __init__(
        self,
        client: redis.Redis,
        node: str,
        *,
        grace_period: float,
        heartbeat_interval: float,
        node_ttl: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self._redis = client
        self.node = node
        self._grace = grace_period
        self._interval = heartbeat_interval
        self._ttl = 3 * heartbeat_interval if node_ttl is None else node_ttl
        if self._ttl <= heartbeat_interval:
            raise ValueError("node_ttl must be longer than heartbeat_interval")
        self._clock = clock
        self._listeners = DeviceListeners()
        # This node's open streams per device: what it re-asserts when its
        # heartbeat had lapsed.
        self._held: dict[tuple[str, str], int] = {}
        self._writing: dict[tuple[str, str], _Turn] = {}
        self._timers: dict[tuple[str, str], Timer] = {}
        self._hold = client.register_script(_HOLD)
        self._expire_script = client.register_script(_EXPIRE)
        self._forget_node = client.register_script(_FORGET_NODE)

    def on_online(self, listener: DeviceListener) -> None:
        self._listeners.online.append(listener)

    def on_lost(self, listener: DeviceListener) -> None:
        self._listeners.lost.append(listener)

    async def stream_opened(self, username: str, session_id: str) -> None:
        key = (username, session_id)
        self._held[key] = self._held.get(key, 0) + 1
        self._cancel_timer(key)
        if await self._write(username, session_id) == _CAME_ONLINE:
            await self._listeners.tell_online(username, session_id)

    async def stream_closed(self, username: str, session_id: str) -> None:
        key = (username, session_id)
        if key not in self._held:
            return
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        if await self._write(username, session_id) == _GRACE_STARTED:
            self._arm(username, session_id, self._grace)

    async def ended(self, username: str, session_id: str) -> None:
        key = (username, session_id)
        self._held.pop(key, None)
        self._cancel_timer(key)
        member = _member(username, session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(devices_key(username), session_id)
            pipe.zrem(GRACES, member)
            pipe.srem(node_devices_key(self.node), member)
            removed, *_ = await pipe.execute()
        # Other nodes' sets may still name it; their closing streams or a
        # sweep drop it there.
        if removed == 1:
            await self._listeners.tell_lost(username, session_id)

    async def online_devices(self, username: str) -> list[str]:
        """Devices with streams on some node (a dead one's until a sweep
        starts their grace) or within their grace period."""
        now = self._clock.time()
        stored = await self._redis.hgetall(devices_key(username))
        online = []
        for session, raw in stored.items():
            device = json.loads(raw)
            if device["nodes"] or device["grace"] > now:
                online.append(_text(session))
        return online

    def streams(self, username: str, session_id: str) -> int:
        """The device's event streams open on this node."""
        return self._held.get((username, session_id), 0)

    async def heartbeat(self) -> None:
        """Tell the cluster this node is alive. If its heartbeat had lapsed
        (a sweep may have started the graces of its devices, or Redis lost
        its data), re-assert every stream it holds."""
        ttl_ms = max(1, round(self._ttl * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(node_key(self.node), str(self._clock.time()), px=ttl_ms, get=True)
            pipe.sadd(NODES, self.node)
            previous, _ = await pipe.execute()
        if previous is None:
            await self._reassert()

    async def restart(self) -> None:
        """Before the first heartbeat of a process: the devices a previous
        process of this node id held go through their grace period, as a
        dead node's do. Its heartbeat may not have lapsed yet (a quick
        restart), and once this process beats no sweep would see it dead:
        they would stay online for ever."""
        await self._redis.delete(node_key(self.node))
        await self._release_node(self.node, self._clock.time())

    async def keep_alive(self) -> None:
        """Beat every heartbeat interval until cancelled; a failed beat is
        logged and tried again at the next."""
        while True:
            end_if_stopping()
            try:
                await self.heartbeat()
            except redis.RedisError:
                if stopping():
                    raise
                log.warning("devices: heartbeat of node %s failed", self.node, exc_info=True)
            await self._clock.sleep(self._interval)

    async def close(self) -> None:
        """Leave the cluster (a graceful stop): the next sweep, on another
        node, starts the graces of the devices this node held, and ends the
        graces it had started, without waiting for its heartbeat's TTL."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self._redis.delete(node_key(self.node))

    async def sweep(self) -> None:
        """Start the grace period of devices held by dead nodes, and end the
        graces that are over (a dead node's, or any missed). Any node may
        run it; its own listeners are told."""
        now = self._clock.time()
        nodes = [_text(n) for n in await self._redis.smembers(NODES)]
        others = [n for n in nodes if n != self.node]
        if others:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in others:
                    pipe.exists(node_key(node))
                beating = await pipe.execute()
            for node, beats in zip(others, beating, strict=True):
                if not beats:
                    await self._release_node(node, now)
        due = await self._redis.zrangebyscore(GRACES, "-inf", now)
        for member in due:
            # Asked without scores, so each is a member.
            username, session_id = json.loads(cast(bytes | str, member))
            await self._expire(username, session_id)

    async def _release_node(self, node: str, now: float) -> None:
        members = await self._redis.smembers(node_devices_key(node))
        for member in members:
            username, session_id = json.loads(member)
            result = await self._hold(
                keys=[devices_key(username), node_devices_key(node), GRACES, node_key(node)],
                args=[session_id, node, now, _text(member), 0, self._grace, "1"],
            )
            if result == _GRACE_STARTED:
                self._arm(username, session_id, self._grace)
        await self._forget_node(keys=[node_key(node), node_devices_key(node), NODES], args=[node])
        if members:
            log.info("devices: node %s is gone; its devices are in their grace period", node)

    async def _write(self, username: str, session_id: str) -> int:
        """This node's stream count of the device, as it is when sent, to
        Redis; one write of a device at a time, so they land in order."""
        key = (username, session_id)
        turn = self._writing.get(key)
        if turn is None:
            turn = self._writing[key] = _Turn()
        turn.queued += 1
        try:
            async with turn.lock:
                result = await self._hold(
                    keys=[devices_key(username), node_devices_key(self.node), GRACES, node_key(self.node)],
                    args=[
                        session_id,
                        self.node,
                        self._clock.time(),
                        _member(username, session_id),
                        self._held.get(key, 0),
                        self._grace,
                        "0",
                    ],
                )
        finally:
            turn.queued -= 1
            if not turn.queued:
                del self._writing[key]
        return int(result)

    async def _reassert(self) -> None:
        for username, session_id in list(self._held):
            if await self._write(username, session_id) == _CAME_ONLINE:
                await self._listeners.tell_online(username, session_id)

    def _arm(self, username: str, session_id: str, delay: float) -> None:
        key = (username, session_id)
        self._cancel_timer(key)
        self._timers[key] = self._clock.call_later(delay, self._grace_over, username, session_id)

    def _cancel_timer(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _grace_over(self, username: str, session_id: str) -> None:
        self._timers.pop((username, session_id), None)
        self._listeners.expire_soon(self._expire(username, session_id))

    async def _expire(self, username: str, session_id: str) -> None:
        try:
            result = await self._expire_script(
                keys=[devices_key(username), GRACES],
                args=[session_id, self._clock.time(), _member(username, session_id)],
            )
        except redis.RedisError:
            # The next sweep ends it.
            log.warning("devices: ending the grace of %s/%s failed", username, session_id, exc_info=True)
            return
        if isinstance(result, bytes | str):
            # The timer fired a hair early against this clock: wait the rest.
            self._arm(username, session_id, float(result))
        elif result == 1:
            await self._listeners.tell_lost(username, session_id)
