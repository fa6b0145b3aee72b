"""The calls' owners on Redis: the cluster's implementation of
``owners.CallOwners``.

Keys:

- ``wac:calls:address:<node>``: the node's gRPC address, with the ttl of
  its announcement (gone with the node);
- ``wac:calls:owners``: the nodes that own or owned calls, what a look for
  orphans goes through (a handful of nodes, never every call);
- ``wac:calls:owned:<node>``: the calls the node owns;
- ``wac:calls:orphans``: calls whose lease lapsed under a live owner;
- ``wac:calls:inbox:<node>``: a list of inputs for the node's calls, JSON
  ``[call id, device]``, expiring with a node that stops reading it.
"""

from __future__ import annotations

import json
from typing import cast

import redis.asyncio as redis

from core.cluster.owners import Orphan

OWNERS = "wac:calls:owners"
ORPHANS = "wac:calls:orphans"
# An inbox nobody reads for this long (its node is gone) is dropped.
_INBOX_TTL_MS = 60_000

# KEYS: the node's address, its owned calls, OWNERS. ARGV: node.
# A gone node whose set is empty leaves OWNERS.
_FORGET_NODE = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 0
"""


def address_key(node: str) -> str:
    return f"wac:calls:address:{node}"


def owned_key(node: str) -> str:
    return f"wac:calls:owned:{node}"


def inbox_key(node: str) -> str:
    return f"wac:calls:inbox:{node}"


class RedisCallOwners:
    """The owners of node ``node`` on the Redis of ``client``."""

    def __init__(self, client: redis.Redis, node: str) -> None:
        self._redis = client
        self._node = node
        self._forget_node = client.register_script(_FORGET_NODE)

    @property
    def node(self) -> str:
        return self._node

    async def restart(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.smembers(owned_key(self._node))
            pipe.delete(owned_key(self._node))
            previous, _ = await pipe.execute()
        if previous:
            await self._redis.sadd(ORPHANS, *previous)

    async def announce(self, address: str, ttl: float) -> None:
        await self._redis.set(address_key(self._node), address, px=max(1, round(ttl * 1000)))

    async def leave(self) -> None:
        await self._redis.delete(address_key(self._node))

    async def address(self, node: str) -> str | None:
        value = await self._redis.get(address_key(node))
        return None if value is None else _text(value)

    async def claim(self, call_id: str, previous: str | None = None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous is not None:
                pipe.srem(owned_key(previous), call_id)
            pipe.sadd(owned_key(self._node), call_id)
            pipe.sadd(OWNERS, self._node)
            pipe.srem(ORPHANS, call_id)
            await pipe.execute()

    async def disown(self, call_id: str, *, orphaned: bool = False) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(owned_key(self._node), call_id)
            if orphaned:
                pipe.sadd(ORPHANS, call_id)
            await pipe.execute()

    async def forget(self, orphan: Orphan) -> None:
        if orphan.node is None:
            await self._redis.srem(ORPHANS, orphan.call_id)
        else:
            await self._redis.srem(owned_key(orphan.node), orphan.call_id)

    async def orphans(self) -> list[Orphan]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(ORPHANS)
            pipe.smembers(OWNERS)
            orphaned, owners = await pipe.execute()
        found = [Orphan(_text(c), None) for c in orphaned]
        others = [n for n in map(_text, owners) if n != self._node]
        if not others:
            return found
        async with self._redis.pipeline(transaction=False) as pipe:
            for node in others:
                pipe.exists(address_key(node))
            alive = await pipe.execute()
        for node, beats in zip(others, alive, strict=True):
            if beats:
                continue
            calls = await self._redis.smembers(owned_key(node))
            if calls:
                found += [Orphan(_text(c), node) for c in calls]
            else:
                await self._forget_node(keys=[address_key(node), owned_key(node), OWNERS], args=[node])
        return found

    async def send(self, node: str, call_id: str, device: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(inbox_key(node), json.dumps([call_id, device]))
            pipe.pexpire(inbox_key(node), _INBOX_TTL_MS)
            await pipe.execute()

    async def inbox(self) -> list[tuple[str, str]]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(inbox_key(self._node), 0, -1)
            pipe.delete(inbox_key(self._node))
            items, _ = await pipe.execute()
        return [cast(tuple[str, str], tuple(json.loads(item))) for item in items]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
