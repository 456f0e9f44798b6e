"""Assembly and lifecycle: build the grpc.aio server from settings, start, drain, stop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from auth.tls import load_tls_material, server_credentials
from comms import comms_pb2_grpc as pb_grpc
from server.audio_library import AudioLibrary, load_library
from server.audio_player import FrameClock
from server.interceptor import AuthInterceptor
from server.registry import SHUTDOWN_MESSAGE, DeviceRegistry
from server.servicer import DeviceService
from server.settings import ServerSettings
from server.store import DeviceStore, MemoryStore, SqliteStore

log = logging.getLogger(__name__)

MS = 1000


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Hardening knobs: bounded messages/metadata/streams, keepalive, connection age/idle."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * MS)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * MS)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.min_client_ping_interval_s * MS),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * MS)),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * MS)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * MS)),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * MS)),
        ("grpc.so_reuseport", 0),
    ]


async def open_store(settings: ServerSettings) -> DeviceStore:
    if settings.state_backend == "memory":
        return MemoryStore()
    return await SqliteStore.open(settings.state_path)


@dataclass
class AudioServer:
    """A running service: the gRPC server, its registry and store."""

    settings: ServerSettings
    server: grpc.aio.Server
    registry: DeviceRegistry
    store: DeviceStore
    clock: FrameClock
    port: int
    stopped: bool = False

    async def stop(self, grace_s: float | None = None) -> None:
        """End device streams ourselves (UNAVAILABLE so devices reconnect), then stop gRPC."""
        if self.stopped:
            return
        self.stopped = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        live = await self.registry.close_all(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
        drained = await self.registry.wait_empty(grace)
        if not drained:
            log.warning("server.drain_incomplete", extra={"remaining_devices": len(self.registry)})
        await self.server.stop(grace=min(grace, 1.0))
        await self.clock.close()
        await self.store.close()
        log.info("server.stopped", extra={"sessions_ended": live, "drained": drained})


async def start_server(settings: ServerSettings, library: AudioLibrary | None = None) -> AudioServer:
    """Load TLS material and content, bind, start. Raises PkiError on bad TLS files."""
    assert settings.server_cert and settings.server_key and settings.client_ca
    material = load_tls_material(settings.server_cert, settings.server_key, settings.client_ca)
    if library is None:
        library = await asyncio.to_thread(
            load_library,
            settings.mode_count,
            settings.content_dir,
            settings.cache_dir,
            settings.opus_bitrate,
        )
    store = await open_store(settings)
    clock = FrameClock(settings.audio_lead_s)
    clock.start()
    registry = DeviceRegistry(store, library, settings.mode_count, clock)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(settings.trust_domain)],
        options=grpc_options(settings),
    )
    pb_grpc.add_DeviceServiceServicer_to_server(
        DeviceService(registry, settings.status_poll_interval_s), server
    )
    try:
        port = server.add_secure_port(settings.bind, server_credentials(material))
    except RuntimeError as exc:
        await clock.close()
        await store.close()
        raise OSError(f"cannot listen on {settings.bind}: {exc}") from None
    await server.start()
    log.info(
        "server.listening",
        extra={"bind": settings.bind, "port": port, "mtls": True, "modes": settings.mode_count},
    )
    return AudioServer(settings, server, registry, store, clock, port)
