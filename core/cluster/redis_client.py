"""The process's one Redis client, made from ``[cluster] redis_url``.

Every Redis implementation of the seam shares it: one bounded pool of
connections per process, replies parsed by hiredis (C), dead connections
found by a health check before use rather than by a request failing on them.
"""

from __future__ import annotations

import redis.asyncio as redis
from redis._parsers import _AsyncHiredisParser

# Connections one process opens at most; a request finding them all busy
# waits up to POOL_WAIT seconds for one instead of failing at once.
POOL_SIZE = 64
POOL_WAIT = 5.0
# A connection idle this long is PINGed before its next use: a Redis
# restarted meanwhile is noticed on that PING, not on a lease renewal.
HEALTH_CHECK_INTERVAL = 5.0
# Seconds to connect, and to wait for any one reply. Shorter than a lease
# ([cluster] lease_seconds >= 1) would be too tight for a loaded Redis;
# a renewal that times out is retried on the next heartbeat.
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 2.0


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (redis://, rediss:// or unix://). It connects
    lazily, on its first command; ``close`` it when the process stops."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        parser_class=_AsyncHiredisParser,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=REPLY_TIMEOUT,
    )
    return redis.Redis.from_pool(pool)


async def close(client: redis.Redis) -> None:
    """Close the client and its pool's connections."""
    await client.aclose()
