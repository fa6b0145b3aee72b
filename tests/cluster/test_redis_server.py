"""The throwaway Redis the cluster tests run on: it starts, answers, and
gives each test an empty database of its own."""

from __future__ import annotations

import redis.asyncio as redis_client
from redis.utils import HIREDIS_AVAILABLE

from tests.support.redis import Redis


async def test_a_test_gets_an_empty_database_it_can_write(redis_url: str) -> None:
    client = redis_client.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set("wac:probe", "1")
        assert await client.get("wac:probe") == b"1"
    finally:
        await client.aclose()


async def test_a_database_is_flushed_before_it_is_handed_out_again(redis_server: Redis) -> None:
    db = redis_server.take_database()
    client = redis_client.from_url(redis_server.url(db))
    try:
        await client.set("wac:left-over", "1")
        redis_server.flush(db)
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


def test_replies_are_parsed_by_hiredis() -> None:
    # The C parser: the cluster's hot paths read many small replies.
    assert HIREDIS_AVAILABLE
