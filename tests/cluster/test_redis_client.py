"""The process's Redis client: hiredis replies, a bounded pool, a close."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from redis._parsers import _AsyncHiredisParser

from core.cluster import redis_client


async def test_the_client_parses_with_hiredis_from_a_bounded_pool(redis_url: str) -> None:
    client = redis_client.connect(redis_url)
    try:
        pool = client.connection_pool
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert pool.max_connections == redis_client.POOL_SIZE
        assert pool.connection_kwargs["parser_class"] is _AsyncHiredisParser
        assert pool.connection_kwargs["health_check_interval"] == redis_client.HEALTH_CHECK_INTERVAL
        # More commands at once than connections: they wait their turn.
        replies = await asyncio.gather(*(client.incr("wac:probe") for _ in range(3 * redis_client.POOL_SIZE)))
        assert sorted(replies) == list(range(1, 3 * redis_client.POOL_SIZE + 1))
    finally:
        await redis_client.close(client)


async def test_a_unix_socket_url_makes_a_client_that_connects_on_first_use() -> None:
    client = redis_client.connect("unix:///nonexistent/redis.sock")
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await redis_client.close(client)
