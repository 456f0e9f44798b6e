"""Health through a Redis outage: liveness holds, readiness follows the store unasked, a server
started before its Redis waits for it, and a restarted Redis costs no call a StoreUnavailable."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from auth.identity import Identity
from server.app import AudioServer
from server.errors import STORE_UNAVAILABLE_TEXT
from server.runtime.probes import LIVENESS_SERVICE
from server.state.guard import StoreGuard
from server.state.redis_store import RedisStore
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, free_port, mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_entrypoint import run_server
from tests.test_ops import NOT_SERVING, SERVING, health_status
from tests.test_security import create_session

PROBE_S = 0.1
FAST = {"store_retry_s": 0.05, "store_probe_interval_s": PROBE_S}
POOLED = 5


async def wait_health(app: AudioServer, ready: int, live: int = SERVING, timeout: float = 15) -> None:
    """Until readiness and liveness say so (polling the health port, bounded)."""
    assert app.health is not None
    deadline = time.monotonic() + timeout
    while True:
        now = (await health_status(app.health.port), await health_status(app.health.port, LIVENESS_SERVICE))
        if now == (ready, live):
            return
        assert time.monotonic() < deadline, f"health (ready, live) stayed {now}, wanted {(ready, live)}"
        await asyncio.sleep(0.05)


async def test_a_server_started_before_its_redis_serves_devices_once_it_comes(
    server_factory: ServerFactory, connect: Connect, pki: EphemeralPki, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")  # its port is chosen; nothing listens there yet
    try:
        app = await server_factory(state_backend="redis", redis_url=redis.url, **FAST)
        await wait_health(app, ready=NOT_SERVING, live=SERVING)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_session(app.port, pki.device_tls("acme", "early"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == STORE_UNAVAILABLE_TEXT  # our words, no address
        assert app.store_probe is not None and app.store_probe.failures >= 1

        redis.start()
        await wait_health(app, ready=SERVING, live=SERVING)
        async with connect(app, "acme", "early") as device:
            await device.press(MODE)
            await wait_for(lambda: mode_of(device.view.leds) == 1)
        await wait_for(lambda: app.store.pending == 0)
        stored = await app.store.load(Identity("acme", "early"))
        assert stored is not None and stored.mode == 1
    finally:
        redis.stop()


def test_a_bounded_wait_for_redis_at_start_up_ends_in_one_line_and_exit_1(pki: EphemeralPki) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_server(
        "--pki-dir", str(pki.root), "--bind", "127.0.0.1:0", "--health-bind", "127.0.0.1:0",
        "--metrics-bind", "", "--admin-bind", "", "--state-backend", "redis", "--redis-url", url,
        "--store-start-timeout-s", "0.5",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    expected = f"audio-server: cannot start: cannot reach the Redis state store at {url} within 0.5 s"
    assert line.startswith(expected), line
    assert "store.waiting" in result.stderr  # it did retry (logged) before giving up


async def test_readiness_follows_a_redis_outage_with_no_traffic_and_liveness_holds(
    server_factory: ServerFactory, redis_server: RedisServer
) -> None:
    app = await server_factory(state_backend="redis", redis_url=redis_server.url, **FAST)
    await wait_health(app, ready=SERVING)
    redis_server.stop(kill=True)  # no device, no operator: only the probe can notice
    await wait_health(app, ready=NOT_SERVING, live=SERVING)
    redis_server.start()
    await wait_health(app, ready=SERVING, live=SERVING)


async def test_pooled_connections_survive_a_redis_restart(redis_server: RedisServer) -> None:
    opened = await RedisStore.open(redis_server.url)
    guard = StoreGuard(opened)
    try:
        devices = [Identity("acme", f"pool-{n}") for n in range(POOLED)]
        await asyncio.gather(*(guard.claim_now(d, "s1") for d in devices))  # several pooled connections
        redis_server.stop(kill=True)
        redis_server.start()  # same port, empty: every pooled connection is dead
        results = await asyncio.gather(*(guard.claim_now(d, "s2") for d in devices), return_exceptions=True)
        assert all(isinstance(r, int) and r >= 1 for r in results), results
        assert guard.healthy
    finally:
        await guard.close()
