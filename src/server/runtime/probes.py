"""The operator's side doors: gRPC health on its own plaintext port, Prometheus metrics over HTTP.

Kubernetes gRPC probes cannot speak mTLS, so health lives on a separate
plaintext server that serves nothing else. It answers two questions:

* readiness (``""`` and the per-service names): ``Readiness`` decides, SERVING
  only while nothing is wrong (the state store takes writes, no background
  loop keeps failing) and the server is not draining;
* liveness (``LIVENESS_SERVICE``): SERVING while the process can work, i.e.
  its listeners are open and its event loop turns (it answers at all),
  whatever the store does. A store outage makes a pod unready, never
  restarted: Kubernetes' liveness and startup probes ask this name.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.supervision import TaskOwner

log = logging.getLogger(__name__)

DEVICE_SERVICE = "com.opalcamera.test.DeviceService"
SESSION_SERVICE = "audio.session.v1.SessionService"
FLEET_SERVICE = "audio.admin.v1.FleetService"
HEALTH_SERVICE_NAMES = ("", DEVICE_SERVICE, SESSION_SERVICE, FLEET_SERVICE)  # readiness
LIVENESS_SERVICE = "audio.Liveness"  # liveness: the process works, independent of the store


@dataclass
class HealthServer:
    server: grpc.aio.Server
    servicer: health.aio.HealthServicer
    port: int

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in HEALTH_SERVICE_NAMES:
            await self.servicer.set(name, status)

    async def set_live(self, live: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if live else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.servicer.set(LIVENESS_SERVICE, status)

    async def stop(self) -> None:
        await self.server.stop(grace=0.5)


@dataclass
class Readiness:
    """What health says: SERVING once started, while no problem is flagged, until draining."""

    problems: set[str] = field(default_factory=set)
    started: bool = False
    health: HealthServer | None = None
    _publishing: TaskOwner = field(default_factory=lambda: TaskOwner("health-publish"))

    @property
    def serving(self) -> bool:
        return self.started and not self.problems

    def flag(self, problem: str, failing: bool) -> None:
        """Called by whoever sees a problem come or go (store guard, supervised loops)."""
        before = self.serving
        if failing:
            self.problems.add(problem)
        else:
            self.problems.discard(problem)
        if self.serving != before:
            log.warning("health.changed", extra={"serving": self.serving, "problems": sorted(self.problems)})
            self._publish()

    def start(self) -> None:
        self.started = True
        self._publish()

    def _publish(self) -> None:
        if self.health is not None:
            self._publishing.spawn(self.health.set_serving(self.serving))

    async def draining(self) -> None:
        """NOT_SERVING for good: health ignores later changes once graceful shutdown began."""
        self.started = False
        if self.health is not None:
            await self._publishing.join()
            await self.health.servicer.enter_graceful_shutdown()


def ensure_bindable(bind: str, what: str) -> None:
    """Fail with one clear line if ``bind`` is taken: gRPC's own message hides the reason, and with
    SO_REUSEPORT (gRPC's default) a second server would even start on the same port."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no clash
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            hint = "; is another audio-server running?" if exc.errno == errno.EADDRINUSE else ""
            raise OSError(f"cannot listen on {bind} ({what}): {reason}{hint}") from None


async def start_health_server(bind: str) -> HealthServer:
    ensure_bindable(bind, "health")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {bind} (health): {exc}") from None
    await server.start()
    for name in HEALTH_SERVICE_NAMES:
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)  # it answers: it lives
    log.info("health.listening", extra={"bind": bind, "port": port})
    return HealthServer(server, servicer, port)


@dataclass
class MetricsServer:
    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(bind: str) -> MetricsServer:
    ensure_bindable(bind, "metrics")
    host, _, port = bind.rpartition(":")
    try:
        httpd, thread = prometheus_client.start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise OSError(f"cannot listen on {bind} (metrics): {exc}") from None
    log.info("metrics.listening", extra={"bind": bind, "port": httpd.server_port})
    return MetricsServer(httpd, thread)
