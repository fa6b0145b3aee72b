"""The call sets on Redis: the cluster's implementation of
``call_sets.CallSets``.

Keys, each a set of call ids: ``wac:calls:placed:<caller>``,
``wac:calls:ringing:<callee>``, ``wac:calls:device:<session>``,
``wac:incall:<username>``. A set emptied is deleted by Redis itself, so
users and devices that come and go leave nothing behind. (The reserve script
touches two users' keys: one Redis, not Redis Cluster.)
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as redis

# KEYS: the caller's placed calls, the callee's ringing calls. ARGV: call id.
# Counted before the call is added, both in one step.
_RESERVE = """
local placed = redis.call('SCARD', KEYS[1]) - redis.call('SISMEMBER', KEYS[1], ARGV[1])
local ringing = redis.call('SCARD', KEYS[2]) - redis.call('SISMEMBER', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return {placed, ringing}
"""

# KEYS: the user's answered calls. ARGV: call id. 1 if it was the first.
_JOIN = """
local before = redis.call('SCARD', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
if before == 0 then return 1 end
return 0
"""

# KEYS: the user's answered calls. ARGV: call id. 1 if it was the last.
_LEAVE = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
"""


def placed_key(username: str) -> str:
    return f"wac:calls:placed:{username}"


def ringing_key(username: str) -> str:
    return f"wac:calls:ringing:{username}"


def device_key(session_id: str) -> str:
    return f"wac:calls:device:{session_id}"


def in_call_key(username: str) -> str:
    return f"wac:incall:{username}"


class RedisCallSets:
    """The sets on the Redis of ``client`` (``redis_client.connect``)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)

    async def reserve(self, call_id: str, caller: str, callee: str) -> tuple[int, int]:
        placed, ringing = await self._reserve(keys=[placed_key(caller), ringing_key(callee)], args=[call_id])
        return int(placed), int(ringing)

    async def answered(self, call_id: str, callee: str) -> None:
        await self._redis.srem(ringing_key(callee), call_id)

    async def release(self, call_id: str, caller: str, callee: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.srem(placed_key(caller), call_id)
            pipe.srem(ringing_key(callee), call_id)
            await pipe.execute()

    async def attach(self, call_id: str, devices: Iterable[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for device in devices:
                pipe.sadd(device_key(device), call_id)
            await pipe.execute()

    async def detach(self, call_id: str, devices: Iterable[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for device in devices:
                pipe.srem(device_key(device), call_id)
            await pipe.execute()

    async def calls_of(self, device: str) -> list[str]:
        return [_text(c) for c in await self._redis.smembers(device_key(device))]

    async def join(self, call_id: str, username: str) -> bool:
        return bool(await self._join(keys=[in_call_key(username)], args=[call_id]))

    async def leave(self, call_id: str, username: str) -> bool:
        return bool(await self._leave(keys=[in_call_key(username)], args=[call_id]))

    async def busy(self, username: str) -> bool:
        return bool(await self._redis.scard(in_call_key(username)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
