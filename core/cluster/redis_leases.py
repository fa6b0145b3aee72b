"""Leases on Redis: the cluster's implementation of ``leases.Leases``.

A holding is one key, ``wac:lease:<name>``, whose value is
``<token>:<node id>`` and whose expiry (Redis's clock, PX) is the lease's:
Redis drops it when its holder stops renewing. Tokens come from one counter,
``wac:lease-tokens``, INCR'd on each acquisition: they grow for every name,
and the counter is one key however many names come and go. Renewing and
releasing are scripts that first check the value is still this holding, so a
node never extends or deletes a lease it lost, even one its own node took
again since. (The keys of a script are not in one hash slot: this is for one
Redis, or one primary with replicas, not Redis Cluster.)
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as redis

from core.cluster.leases import Lease, checked_ttl

_PREFIX = "wac:lease:"
_TOKENS = "wac:lease-tokens"

# KEYS: the lease, the token counter. ARGV: node id, ttl in ms.
# The counter moves only when the name is free, so each holding has its own
# token; SET NX is then certain to succeed, but states the rule.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2])
return token
"""

# KEYS: the lease. ARGV: the holding's value, ttl in ms. 1 if renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: the leases. ARGV: their holdings' values, then one ttl in ms for
# all. For each, 1 if renewed: a node's whole heartbeat in one command.
_RENEW_MANY = """
local ttl = ARGV[#ARGV]
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    renewed[i] = redis.call('PEXPIRE', key, ttl)
  else
    renewed[i] = 0
  end
end
return renewed
"""

# Leases renewed by one script: Redis serves nothing else while it runs.
RENEW_BATCH = 500

# KEYS: the lease. ARGV: the holding's value. 1 if released.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeases:
    """Leases for node ``node`` on the Redis of ``client``
    (``redis_client.connect``): every node of the cluster on the same one."""

    def __init__(self, client: redis.Redis, node: str) -> None:
        if ":" in node:
            # The value's separator; [cluster] node_id never has one.
            raise ValueError(f"a node id has no ':', got {node!r}")
        self._node = node
        self._client = client
        # Sent by SHA; loaded again by the client if Redis lost its scripts
        # (a restart).
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._renew_many = client.register_script(_RENEW_MANY)

    @property
    def node(self) -> str:
        return self._node

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        token = await self._acquire(keys=[_PREFIX + name, _TOKENS], args=[self._node, _milliseconds(ttl)])
        return None if token is None else Lease(name, self._node, int(token), ttl)

    async def renew(self, lease: Lease) -> bool:
        renewed = await self._renew(keys=[_PREFIX + lease.name], args=[_value(lease), _milliseconds(lease.ttl)])
        return bool(renewed)

    async def renew_many(self, leases: Sequence[Lease]) -> list[bool]:
        answers = [False] * len(leases)
        # One ttl per script: the leases are grouped by theirs.
        by_ttl: dict[float, list[int]] = {}
        for index, lease in enumerate(leases):
            by_ttl.setdefault(lease.ttl, []).append(index)
        for ttl, indexes in by_ttl.items():
            for start in range(0, len(indexes), RENEW_BATCH):
                batch = indexes[start : start + RENEW_BATCH]
                renewed = await self._renew_many(
                    keys=[_PREFIX + leases[index].name for index in batch],
                    args=[*(_value(leases[index]) for index in batch), _milliseconds(ttl)],
                )
                for index, flag in zip(batch, renewed, strict=True):
                    answers[index] = bool(flag)
        return answers

    async def release(self, lease: Lease) -> None:
        await self._release(keys=[_PREFIX + lease.name], args=[_value(lease)])

    async def owner(self, name: str) -> str | None:
        value = await self._client.get(_PREFIX + name)
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        return text.split(":", 1)[1]


def _value(lease: Lease) -> str:
    return f"{lease.token}:{lease.node}"


def _milliseconds(ttl: float) -> int:
    return max(1, round(checked_ttl(ttl) * 1000))
