"""The device's connection manager: a server whose store is away is asked again soon, not late."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comms.tasks import cancel_and_wait
from device.audio_sink import RecordingSink
from device.backoff import Backoff
from device.client import DeviceClient
from device.connection import STORE_RETRY_CAP_S, ConnectionManager
from tests.conftest import ServerFactory
from tests.helpers import EphemeralPki, wait_for
from tests.redis_server import RedisServer

REFUSALS = 6


async def test_store_refusals_retry_on_a_short_capped_backoff(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path
) -> None:
    unstarted = RedisServer(tmp_path / "redis")  # the server starts before its Redis: it refuses sessions
    app = await server_factory(state_backend="redis", redis_url=unstarted.url, store_retry_s=0.05)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:  # record the schedule instead of sleeping it
        delays.append(delay)
        await asyncio.sleep(0)

    manager = ConnectionManager(
        make_client=lambda: DeviceClient(
            f"127.0.0.1:{app.port}", pki.device_tls("acme", "early"), RecordingSink()
        ),
        backoff=Backoff(uniform=lambda low, high: high),  # the ceiling: the longest each could be
        on_state=lambda state, client: None,
        sleep=no_wait,
    )
    manager.store_backoff.uniform = lambda low, high: high
    task = asyncio.create_task(manager.run())
    try:
        await wait_for(lambda: len(manager.attempts) >= REFUSALS, timeout=30)
    finally:
        await cancel_and_wait(task)
    assert {a.reason for a in manager.attempts} == {"UNAVAILABLE"}
    assert all(0 < d <= STORE_RETRY_CAP_S for d in delays)  # soon, but never hammering (capped, jittered)
    assert manager.backoff.failures == 0  # the long backoff is kept for real failures
