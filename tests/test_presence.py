"""Presence leases on a real Redis: a refresh extends only what is still this node's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from auth.identity import Identity
from server.fleet.presence import RedisPresence, presence_key
from tests.redis_server import RedisServer

DEVICE = Identity("acme", "dev-1")
OTHER = Identity("acme", "dev-2")
LEASE_S = 30.0


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


async def test_a_refresh_never_takes_back_a_lease_another_node_holds(client: aioredis.Redis) -> None:
    a = RedisPresence("node-a", client, LEASE_S)
    b = RedisPresence("node-b", client, LEASE_S)
    await a.claim(DEVICE)
    await a.claim(OTHER)
    await b.claim(DEVICE)  # the device reconnected to B; A has not heard yet
    await a.refresh([DEVICE, OTHER])  # A's lease loop runs before A ends its old session
    assert await a.holder(DEVICE) == "node-b"
    assert await a.holder(OTHER) == "node-a"  # its own lease is extended as before
    assert await client.pttl(presence_key(OTHER)) > (LEASE_S - 5) * 1000


async def test_a_refresh_renews_an_expired_lease_of_a_device_still_live_here(client: aioredis.Redis) -> None:
    a = RedisPresence("node-a", client, LEASE_S)
    await a.claim(DEVICE)
    await client.delete(presence_key(DEVICE))  # expired while Redis was away
    await a.refresh([DEVICE])
    assert await a.holder(DEVICE) == "node-a"
    assert await client.pttl(presence_key(DEVICE)) > (LEASE_S - 5) * 1000
