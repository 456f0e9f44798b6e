"""The ``--workers`` supervisor's own loops are supervised, and its health view answers liveness.

Workers here are small stand-ins (a health server that reports live but not ready, as a worker
waiting for its Redis does), so the supervisor's logic runs for real without starting servers.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from server import metrics
from server.runtime.probes import LIVENESS_SERVICE
from server.runtime.workers import Supervisor, Worker
from tests.conftest import make_settings
from tests.helpers import EphemeralPki, wait_for
from tests.test_ops import NOT_SERVING, SERVING, health_status

STAND_IN = """
import asyncio, pathlib, sys
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main() -> None:
    first = pathlib.Path(sys.argv[1])
    if not first.exists():  # the fault: the first run says something its keeper cannot read
        first.write_text("ran")
        print("worker-health-port not-a-port", flush=True)
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # waiting for its store
    await servicer.set(sys.argv[2], health_pb2.HealthCheckResponse.SERVING)
    print(f"worker-health-port {port}", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def restarts(task: str) -> float:
    return metrics.BACKGROUND_RESTARTS.labels(task=task)._value.get()


async def test_a_crashed_keeper_is_logged_counted_and_its_worker_restarted(
    pki: EphemeralPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    marker = tmp_path / "first-run"

    def command(self: Supervisor, worker: Worker) -> list[str]:
        return [sys.executable, str(script), str(marker), LIVENESS_SERVICE]

    monkeypatch.setattr(Supervisor, "_command", command)
    settings = make_settings(pki, tmp_path, admin_bind="", workers=1, health_bind="127.0.0.1:0")
    supervisor = Supervisor(settings, [])
    before = restarts("worker-0")
    running = asyncio.create_task(supervisor.run())
    try:
        (worker,) = supervisor.workers
        await wait_for(lambda: worker.started == 2 and worker.health_port is not None, timeout=20)
        assert restarts("worker-0") == before + 1  # counted
        crashed = [r for r in caplog.records if r.getMessage() == "task.crashed"]
        assert [getattr(r, "task", None) for r in crashed] == ["worker-0"] and crashed[0].exc_info  # logged
        first_pid = worker.pids[0]
        await wait_for(lambda: not Path(f"/proc/{first_pid}").exists(), timeout=10)  # killed, no orphan
        assert supervisor.health is not None
        port = supervisor.health.port

        async def health_now() -> tuple[int, int]:
            return await health_status(port), await health_status(port, LIVENESS_SERVICE)

        await wait_for(lambda: worker.live, timeout=10)  # the poller asked the worker's liveness
        for _ in range(100):  # the poller runs every second: wait for its view of the new worker
            if await health_now() == (NOT_SERVING, SERVING):
                break
            await asyncio.sleep(0.1)
        assert await health_now() == (NOT_SERVING, SERVING)  # alive, not ready: no restart wanted
    finally:
        supervisor.stop()
        await asyncio.wait_for(running, timeout=30)
