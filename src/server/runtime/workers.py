"""``--workers N``: one supervisor, N server processes on one port, one health and metrics view.

Python runs one core per process (the GIL), so the supervisor starts N workers
(``python -m server`` again, with ``--worker-index i``). Each binds the device
port with SO_REUSEPORT, so the kernel spreads connections across them; a
device's three streams share one connection, so they land on one worker. The
workers share device state, presence and the bus through Redis, like replicas.

The supervisor
* restarts a worker that dies (its devices reconnect to the others meanwhile);
* serves the one health port (each worker reports a private health port on its
  first stdout line): readiness SERVING while every worker says SERVING;
  liveness SERVING while every worker process runs and answers liveness (or is
  still starting), whatever the store does;
* runs its keepers (one per worker) and health poller under ``supervise``: a
  crash is logged, counted (``audio_supervisor_restarts_total``) and restarted
  (a keeper's worker with it); one that keeps failing turns both health
  answers NOT_SERVING;
* serves the one /metrics: Prometheus multiprocess mode sums the workers'
  counters and their live gauges;
* on SIGTERM turns NOT_SERVING and drains every worker, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import metrics
from server.runtime.probes import LIVENESS_SERVICE, HealthServer, ensure_bindable, start_health_server
from server.runtime.settings import ServerSettings
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
HEALTH_POLL_S = 1.0
HEALTH_LINE = "worker-health-port "
STOP_EXTRA_S = 5.0  # beyond the drain and grace the workers were given


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    health_port: int | None = None
    serving: bool = False
    live: bool = False
    started: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: ServerSettings, argv: Sequence[str]) -> None:
        self.settings = settings
        self._argv = list(argv)
        self.workers = [Worker(i) for i in range(settings.worker_count)]
        self._stopping = False
        self._stop = asyncio.Event()
        self.problems: set[str] = set()  # supervised loops that keep failing
        self._metrics_dir = tempfile.TemporaryDirectory(prefix="audio-server-metrics-")
        self.health: HealthServer | None = None

    def _command(self, worker: Worker) -> list[str]:
        return [
            sys.executable, "-m", "server", *self._argv,
            "--workers", "1", "--worker-index", str(worker.index),
            "--node-id", f"{self.settings.node_id}-w{worker.index}",
            "--health-bind", "127.0.0.1:0", "--metrics-bind", "",
        ]  # fmt: skip

    async def _start(self, worker: Worker) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir.name, "PYTHONUNBUFFERED": "1"}
        worker.process = await asyncio.create_subprocess_exec(
            *self._command(worker), stdout=asyncio.subprocess.PIPE, env=env
        )
        worker.started += 1
        worker.pids.append(worker.process.pid)
        worker.health_port, worker.serving = None, False
        log.info(
            "worker.started",
            extra={"worker": worker.index, "pid": worker.process.pid, "start": worker.started},
        )

    def stop(self) -> None:
        """What SIGTERM/SIGINT do: drain the workers, then ``run`` returns."""
        self._stop.set()

    def _flag(self, task: str, failing: bool) -> None:
        (self.problems.add if failing else self.problems.discard)(task)
        log.warning("supervisor.health", extra={"task": task, "failing": failing})

    async def _keep(self, worker: Worker) -> None:
        """Run one worker for good; if this keeper itself fails, its worker goes with it (killed, so
        the restarted keeper starts a fresh one instead of leaving an orphan)."""
        try:
            await self._keep_running(worker)
        except Exception:
            process = worker.process
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
                self._forget_metrics(process.pid)
            worker.serving = worker.live = False
            raise

    async def _keep_running(self, worker: Worker) -> None:
        """Restart the worker whenever it exits, until the supervisor stops."""
        while not self._stopping:
            await self._start(worker)
            assert worker.process is not None and worker.process.stdout is not None
            async for raw in worker.process.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith(HEALTH_LINE):
                    worker.health_port = int(line[len(HEALTH_LINE) :])
            code = await worker.process.wait()
            worker.serving = worker.live = False
            self._forget_metrics(worker.process.pid)
            if self._stopping:
                return
            log.error(
                "worker.exited", extra={"worker": worker.index, "code": code, "restart_in_s": RESTART_DELAY_S}
            )
            await asyncio.sleep(RESTART_DELAY_S)

    def _forget_metrics(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self._metrics_dir.name)

    async def _poll_health(self) -> None:
        while True:
            for worker in self.workers:
                running = worker.process is not None and worker.process.returncode is None
                worker.serving = await _worker_serving(worker.health_port)
                starting = running and worker.health_port is None  # loading its library, say
                answers = running and await _worker_serving(worker.health_port, LIVENESS_SERVICE)
                worker.live = starting or answers
            if self.health is not None and not self._stopping:
                await self.health.set_serving(not self.problems and all(w.serving for w in self.workers))
                await self.health.set_live(not self.problems and all(w.live for w in self.workers))
            await asyncio.sleep(HEALTH_POLL_S)

    def _serve_metrics(self) -> tuple[WSGIServer, threading.Thread] | None:
        if not self.settings.metrics_bind:
            return None
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._metrics_dir.name)
        registry.register(metrics.SupervisorCollector())  # its own loops' restarts, beside the workers'
        ensure_bindable(self.settings.metrics_bind, "metrics")
        host, _, port = self.settings.metrics_bind.rpartition(":")
        return start_http_server(int(port), addr=host.strip("[]"), registry=registry)

    async def run(self) -> None:
        ensure_bindable(self.settings.bind, "device mTLS")  # once, before workers share it
        if self.settings.admin_bind:
            ensure_bindable(self.settings.admin_bind, "operator API")
        if self.settings.console_bind:
            ensure_bindable(self.settings.console_bind, "console")
        metrics_server = self._serve_metrics()
        if self.settings.health_bind:
            self.health = await start_health_server(self.settings.health_bind)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        keepers, poller = TaskOwner("worker-keepers"), TaskOwner("worker-health")
        for w in self.workers:
            keepers.supervise(f"worker-{w.index}", lambda w=w: self._keep(w), self._flag)  # type: ignore[misc]
        poller.supervise("worker-health", self._poll_health, self._flag)
        log.info("supervisor.running", extra={"workers": len(self.workers), "bind": self.settings.bind})
        print(
            f"audio-server: {len(self.workers)} workers on {self.settings.bind}", file=sys.stderr, flush=True
        )
        await self._stop.wait()
        self._stopping = True
        if self.health is not None:
            await self.health.servicer.enter_graceful_shutdown()
        await poller.close()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        limit = self.settings.drain_delay_s + self.settings.shutdown_grace_s + STOP_EXTRA_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await keepers.join()
        for worker in self.workers:
            if len(keepers) and worker.process is not None and worker.process.returncode is None:
                worker.process.kill()
        await keepers.join()  # each keeper ends once its worker has exited
        await keepers.close()
        if self.health is not None:
            await self.health.stop()
        if metrics_server is not None:
            httpd, thread = metrics_server
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        self._metrics_dir.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("supervisor.stopped", extra={"workers": len(self.workers)})


async def _worker_serving(port: int | None, service: str = "") -> bool:
    if port is None:
        return False
    with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    return False
