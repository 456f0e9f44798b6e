"""The operator's side doors: gRPC health on its own plaintext port, Prometheus metrics over HTTP.

Kubernetes gRPC probes cannot speak mTLS, so health lives on a separate
plaintext server that serves nothing else. Readiness flips to NOT_SERVING
when draining starts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

DEVICE_SERVICE = "com.opalcamera.test.DeviceService"
SESSION_SERVICE = "audio.session.v1.SessionService"
HEALTH_SERVICE_NAMES = ("", DEVICE_SERVICE, SESSION_SERVICE)


@dataclass
class HealthServer:
    server: grpc.aio.Server
    servicer: health.aio.HealthServicer
    port: int

    async def serving(self) -> None:
        for name in HEALTH_SERVICE_NAMES:
            await self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def draining(self) -> None:
        await self.servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        await self.server.stop(grace=0.5)


async def start_health_server(bind: str) -> HealthServer:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {bind} (health): {exc}") from None
    await server.start()
    for name in HEALTH_SERVICE_NAMES:
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
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
    host, _, port = bind.rpartition(":")
    try:
        httpd, thread = prometheus_client.start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise OSError(f"cannot listen on {bind} (metrics): {exc}") from None
    log.info("metrics.listening", extra={"bind": bind, "port": httpd.server_port})
    return MetricsServer(httpd, thread)
