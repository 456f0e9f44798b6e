"""Bus messages over a real Redis are handled per device: in order for one, concurrently across devices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server.fleet.bus import COMMAND, BusMessage, RedisBus
from server.fleet.bus_dispatch import KeyedDispatcher
from tests.helpers import sample, wait_for
from tests.redis_server import RedisServer

SLOW, FAST = "slow-dev", "fast-dev"


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisBus]:
    client = aioredis.Redis.from_url(redis_server.url)
    node = RedisBus("node-x", client)
    await node.start()
    yield node
    await node.close()
    await client.aclose()


def message(device: str, number: int) -> BusMessage:
    return BusMessage(COMMAND, "other-node", "acme", device, {"n": number})


async def test_a_slow_handler_for_one_device_does_not_hold_up_another(bus: RedisBus) -> None:
    gate = asyncio.Event()  # the slow device's first message waits here (a long sound load)
    seen: dict[str, list[int]] = {SLOW: [], FAST: []}
    fast_seen = asyncio.Event()

    async def handler(received: BusMessage) -> None:
        if received.device == SLOW and not seen[SLOW]:
            seen[SLOW].append(-1)  # started
            await gate.wait()
        seen[received.device].append(int(received.data["n"]))
        if received.device == FAST:
            fast_seen.set()

    bus.subscribe(handler)
    for number in range(5):
        await bus.publish(message(SLOW, number), "node-x")
    await bus.publish(message(FAST, 0), "node-x")
    async with asyncio.timeout(10):
        await fast_seen.wait()  # while the slow device's handler is still parked on the gate
    assert not gate.is_set() and seen[SLOW] == [-1] and seen[FAST] == [0]
    gate.set()
    await wait_for(lambda: len(seen[SLOW]) == 6, timeout=10)
    assert seen[SLOW] == [-1, 0, 1, 2, 3, 4]  # one device's messages in the order they were sent


async def test_a_full_queue_refuses_new_messages_and_counts_them() -> None:
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(received: BusMessage) -> None:
        await gate.wait()
        handled.append(int(received.data["n"]))

    dispatcher: KeyedDispatcher[BusMessage] = KeyedDispatcher(
        handler, lambda m: (m.tenant, m.device), limit=3
    )
    before = sample("audio_bus_dropped_total")
    accepted = [dispatcher.submit(message(SLOW, n)) for n in range(5)]
    # The first one is being handled (taken off the queue) once its task runs; before that all 3 wait.
    assert accepted == [True, True, True, False, False]
    assert sample("audio_bus_dropped_total") == before + 2
    gate.set()
    await dispatcher.idle()
    assert handled == [0, 1, 2] and dispatcher.queued == 0
    await dispatcher.close()
