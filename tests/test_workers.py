"""``--workers 2``: two processes on one port, a worker killed and replaced, one health and metrics view."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from auth.identity import Identity
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.fleet.presence import RedisPresence
from tests.helpers import MODE, EphemeralPki, free_port, mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_ops import SERVING, health_status

pytestmark = pytest.mark.slow
DEVICES = 12


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                lines.append(entry)
    return lines


def connected_total(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("audio_connected_devices{")
    )


async def connect(port: int, pki: EphemeralPki, name: str) -> DeviceClient:
    client = DeviceClient(f"127.0.0.1:{port}", pki.device_tls("acme", name), RecordingSink())
    await client.connect()
    await wait_for(lambda: client.status_requests >= 1)
    return client


async def test_two_workers_share_the_port_survive_a_kill_and_sum_their_metrics(
    redis_server: RedisServer, pki: EphemeralPki, tmp_path: Path
) -> None:
    port, health_port, metrics_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "supervisor.log"
    with log_path.open("w") as log_file:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "server", "--pki-dir", str(pki.root), "--bind", f"127.0.0.1:{port}",
             "--health-bind", f"127.0.0.1:{health_port}", "--metrics-bind", f"127.0.0.1:{metrics_port}",
             "--admin-bind", f"127.0.0.1:{free_port()}", "--state-backend", "redis",
             "--redis-url", redis_server.url, "--workers", "2",
             "--node-id", "sup", "--log-format", "json", "--shutdown-grace-s", "2"],
            stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    observer = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    presence = RedisPresence("observer", observer)
    clients: dict[str, DeviceClient] = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if await health_status(health_port) == SERVING:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline and supervisor.poll() is None, log_path.read_text()
            await asyncio.sleep(0.2)

        for n in range(DEVICES):
            clients[f"w-{n}"] = await connect(port, pki, f"w-{n}")
            await clients[f"w-{n}"].press(MODE)
        holders: dict[str, str | None] = {}

        async def read_holders() -> None:
            for name in clients:
                holders[name] = await presence.holder(Identity("acme", name))

        while len(holders) < DEVICES or None in holders.values():
            await read_holders()
            await asyncio.sleep(0.1)
        assert set(holders.values()) == {"sup-w0", "sup-w1"}  # both workers took connections
        await wait_for(lambda: connected_total(metrics_port) == DEVICES, timeout=5)  # one /metrics, summed

        (first,) = [e for e in log_events(log_path, "worker.started") if e["worker"] == 0]
        os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        victims = [name for name, node in holders.items() if node == "sup-w0"]
        await wait_for(lambda: all(clients[name].ends for name in victims), timeout=10)
        for name in victims:  # they reconnect (to the other worker, or the replacement) and keep their mode
            await clients[name].close()
            clients[name] = await connect(port, pki, name)
            await wait_for(lambda c=clients[name]: mode_of(c.view.leds) == 1)  # type: ignore[misc]
        await wait_for(lambda: len(log_events(log_path, "worker.started")) == 3, timeout=15)  # replaced
        assert log_events(log_path, "worker.exited")[0]["worker"] == 0
        await wait_for(lambda: connected_total(metrics_port) == DEVICES, timeout=10)  # the dead one forgotten
        assert all(not client.ends for client in clients.values())
    finally:
        for client in clients.values():
            await client.close()
        await observer.aclose()
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=30)
    assert code == 0, log_path.read_text()[-2000:]


def test_several_workers_need_redis(pki: EphemeralPki) -> None:
    from tests.test_entrypoint import run_server

    result = run_server("--pki-dir", str(pki.root), "--workers", "2", "--state-backend", "memory")
    assert result.returncode == 1
    assert "2 workers need state_backend=redis" in result.stderr.strip().splitlines()[-1]
