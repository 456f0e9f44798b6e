"""Assembly and lifecycle: build the grpc.aio server from settings, start, drain, stop."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc
from grpc_reflection.v1alpha import reflection

from auth.errors import RevocationListError
from auth.tokens import TokenPolicy
from comms.gen import admin_pb2_grpc as apb_grpc
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import enroll_pb2_grpc as epb_grpc
from comms.gen import renew_pb2_grpc as rpb_grpc
from comms.gen import session_pb2_grpc as spb_grpc
from server import metrics
from server.access.authn import Authenticator
from server.access.crl_record import CrlRecorder, check_crl_at_start
from server.access.handshakes import HandshakeMonitor
from server.access.interceptor import AuthInterceptor, OpenInterceptor
from server.access.tls_reload import ReloadingServerTls
from server.access.trust import TrustState
from server.announce.announcer import Announcer
from server.announce.schedule import Run, Schedule, ScheduleStore
from server.announce.scheduler import Scheduler
from server.announce.stage import Stage
from server.announce.talk import Talks
from server.audio.library import AudioLibrary, load_library
from server.audio.player import FrameClock
from server.audio.tenant_sounds import TenantSounds
from server.devices.registry import SHUTDOWN_MESSAGE, DeviceRegistry
from server.devices.session_service import CREATE_SESSION_METHOD, SessionService
from server.devices.streams import DeviceService, StreamPolicy
from server.enrolment.attempts import FailedAttempts, PerAddress
from server.enrolment.claims import ClaimDesk, OpenEnrolment
from server.enrolment.renewal import RENEW_METHOD, Renewals
from server.enrolment.service import Enrolment, IssuingFiles
from server.fleet.bus import FleetBus, InProcessBus, RedisBus
from server.fleet.labels import DeviceLabels
from server.fleet.node import Fleet
from server.fleet.presence import LocalPresence, Presence, RedisPresence
from server.limits import CallLimiter
from server.operator.api import FleetAdmin
from server.operator.audit import AuditEvent, AuditLog
from server.operator.console.web import Console
from server.operator.enrolments import EnrolmentConfig
from server.operator.sign_in import ConsoleSessions
from server.runtime.probes import (
    DEVICE_SERVICE,
    SESSION_SERVICE,
    HealthServer,
    MetricsServer,
    Readiness,
    ensure_bindable,
    start_health_server,
    start_metrics_server,
)
from server.runtime.settings import ServerSettings
from server.runtime.store_probe import StoreProbe, store_where
from server.runtime.store_reset import GenerationCheckedStore, StoreGeneration
from server.runtime.watch import FileWatcher
from server.state.backend import Backend, open_backend
from server.state.enrolment_codes import EnrolmentCodes
from server.state.enrolment_requests import ClaimCodes, PendingRequests
from server.state.guard import StoreGuard
from server.state.shared_data import SharedData
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

MS = 1000
ADMIN_MAX_MESSAGE = 4 * 1024 * 1024
ADMIN_CALLS_PER_OPERATOR = 32
ENROL_MAX_MESSAGE = 16 * 1024  # a code and a CSR in; a two-certificate chain and the CA bundle out
ENROL_CONCURRENT_CALLS = 64
START_CHECKS = "store-start-checks"  # readiness problem while start-up reads wait for the store
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Hardening knobs: bounded messages/metadata/streams, keepalive, connection age/idle."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * MS)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * MS)),
        # Current gRPC Core waits ping_timeout (default 60 s) for any ping's ack, keepalive's included.
        ("grpc.http2.ping_timeout_ms", int(settings.keepalive_timeout_s * MS)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.min_client_ping_interval_s * MS),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging idle devices: dead peers seen in seconds
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * MS)),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * MS)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * MS)),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * MS)),
        # Workers of one supervisor share the port (the kernel spreads connections); anything
        # else must own it, so a second server on a taken port fails instead of sharing it.
        ("grpc.so_reuseport", 1 if settings.worker_index >= 0 else 0),
    ]


async def _every(interval_s: float, step: Callable[[], None]) -> None:
    while True:
        step()
        await asyncio.sleep(interval_s)


def admin_grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """The operator listener: the device listener's knobs, with room for sound uploads (1 MiB chunks)."""
    options = dict(grpc_options(settings))
    options.update(
        {
            "grpc.max_receive_message_length": ADMIN_MAX_MESSAGE,
            "grpc.max_send_message_length": ADMIN_MAX_MESSAGE,
            "grpc.max_concurrent_streams": 64,
        }
    )
    return list(options.items())


def admin_server(
    authenticator: Authenticator,
    admin: FleetAdmin,
    settings: ServerSettings,
    handshakes: HandshakeMonitor | None = None,
) -> grpc.aio.Server:
    """FleetService for its own mTLS listener (never the device port), operators only; not bound yet."""
    interceptor = AuthInterceptor(
        authenticator, CallLimiter(ADMIN_CALLS_PER_OPERATOR), frozenset(), handshakes, admin.policy()
    )
    server = grpc.aio.server(interceptors=[interceptor], options=admin_grpc_options(settings))
    apb_grpc.add_FleetServiceServicer_to_server(admin, server)
    return server


def fleet_links(settings: ServerSettings, backend: Backend) -> tuple[FleetBus, Presence]:
    """Redis when the state is shared (several processes or replicas), in-process otherwise."""
    if backend.redis is not None:
        return (
            RedisBus(settings.node_id, backend.redis),
            RedisPresence(settings.node_id, backend.redis, settings.presence_lease_s),
        )
    return InProcessBus(settings.node_id), LocalPresence(settings.node_id, settings.presence_lease_s)


@dataclass
class AudioServer:
    """A running service: the gRPC server, its registry and store.

    ``stop`` drains the devices, then unwinds what ``start_server`` started, in reverse order."""

    settings: ServerSettings
    server: grpc.aio.Server
    registry: DeviceRegistry
    store: StoreGuard
    clock: FrameClock
    trust: TrustState
    watchers: list[FileWatcher]
    port: int
    readiness: Readiness
    fleet: Fleet
    handshakes: HandshakeMonitor
    background: TaskOwner  # the server's own loops
    cleanup: AsyncExitStack  # every started part's close, registered as it started
    sounds: TenantSounds
    audit: AuditLog
    store_probe: StoreProbe
    announcer: Announcer
    scheduler: Scheduler
    talks: Talks
    generation: StoreGeneration | None = None
    health: HealthServer | None = None
    metrics: MetricsServer | None = None
    admin: grpc.aio.Server | None = None
    admin_port: int = 0
    console: Console | None = None
    console_port: int = 0
    enroll: grpc.aio.Server | None = None
    enroll_port: int = 0
    enrolment_codes: EnrolmentCodes | None = None
    enrolment_requests: PendingRequests | None = None
    stopped: bool = False

    async def stop(self, grace_s: float | None = None) -> None:
        """End device streams ourselves (UNAVAILABLE so devices reconnect), stop gRPC, then the rest."""
        if self.stopped:
            return
        self.stopped = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.readiness.draining()  # readiness fails: no new devices are sent here
        if self.health is not None:
            await asyncio.sleep(self.settings.drain_delay_s)  # endpoints catch up; keep serving meanwhile
        live = await self.registry.close_all(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
        drained = await self.registry.wait_empty(grace)
        if not drained:
            log.warning("server.drain_incomplete", extra={"remaining_devices": len(self.registry)})
        await self.server.stop(grace=min(grace, 1.0))
        await self.cleanup.aclose()
        log.info("server.stopped", extra={"sessions_ended": live, "drained": drained})


async def start_server(settings: ServerSettings, library: AudioLibrary | None = None) -> AudioServer:
    """Load TLS material, trust and content, bind, start. Raises PkiError on bad TLS files.

    Every part registers its close on one exit stack as it starts: a start that fails half-way
    (a port in use, a rolled-back CRL) closes what had started and leaves nothing behind."""
    async with AsyncExitStack() as stack:
        app = await _assemble(settings, library, stack)
        app.cleanup = stack.pop_all()
    return app


async def _assemble(
    settings: ServerSettings, library: AudioLibrary | None, stack: AsyncExitStack
) -> AudioServer:
    assert settings.server_cert and settings.server_key and settings.client_ca
    assert settings.crl_path and settings.signing_key_dir
    handshakes = HandshakeMonitor()
    tls = ReloadingServerTls(
        settings.server_cert, settings.server_key, settings.client_ca, https=bool(settings.console_bind)
    )
    policy = TokenPolicy(
        settings.token_issuer, settings.token_audience, settings.token_ttl_s, settings.token_leeway_s
    )
    trust = TrustState(settings.signing_key_dir, settings.crl_path, settings.client_ca, policy)
    if library is None:
        library = await asyncio.to_thread(
            load_library, settings.mode_count, settings.content_dir, settings.cache_dir, settings.opus_bitrate
        )
    readiness = Readiness()
    backend = await open_backend(settings)
    generation = StoreGeneration(backend.redis, readiness.flag) if backend.redis is not None else None
    store = StoreGuard(
        GenerationCheckedStore(backend.store, generation) if generation is not None else backend.store,
        retry_s=settings.store_retry_s,
        on_health=lambda ok: readiness.flag("state-store", not ok),
    )
    stack.push_async_callback(store.close)  # closes the backend's store too
    background = TaskOwner("server")
    stack.push_async_callback(background.close)
    probe = StoreProbe(
        store, store_where(settings), settings.store_probe_interval_s, settings.store_start_timeout_s
    )
    reached = await probe.first()  # before anything is served: an unreached store starts the server unready
    data = backend.data
    if reached:  # a missing or rolled-back CRL must not un-revoke anyone
        await check_crl_at_start(data, trust)
    clock = FrameClock(settings.audio_lead_s)
    stack.push_async_callback(clock.close)
    sounds = TenantSounds(
        data, library, settings.opus_bitrate, settings.sound_max_bytes, settings.sound_max_seconds
    )
    registry = DeviceRegistry(
        store,
        sounds,
        settings.mode_count,
        clock,
        (settings.event_rate_per_s, settings.event_burst),
        settings.audio_write_timeout_s,
        shared_store=backend.shared,
    )
    stack.push_async_callback(registry.close)
    trust.on_revoked(registry.revoke)
    bus, presence = fleet_links(settings, backend)
    fleet = Fleet(registry, store, bus, presence, trust, data)
    stack.push_async_callback(fleet.close)
    announcer = Announcer(fleet, Stage(registry, sounds), settings.announce_lead_ms / 1000)
    stack.push_async_callback(announcer.close)
    talks = Talks(fleet, registry, settings.opus_bitrate)
    stack.push_async_callback(talks.close)
    authenticator = Authenticator(settings.trust_domain, trust, registry.current_record)
    server = device_server(settings, authenticator, registry, trust, handshakes)
    stack.push_async_callback(server.stop, 0)  # a no-op after stop()'s drain; the unwind of a failed start
    watchers = file_watchers(settings, tls, trust)
    for watcher in watchers:
        stack.push_async_callback(watcher.close)
    crl_record = CrlRecorder(data)  # the fleet remembers the newest CRL (see check_crl_at_start)
    trust.on_crl_loaded(crl_record.note)
    trust.report_crl_health(readiness.flag)
    clock.start(readiness.flag)
    store.start()
    registry.start(readiness.flag)
    await fleet.start(readiness.flag)
    announcer.start()
    talks.start()
    background.supervise("tls-handshakes", handshakes.run, readiness.flag)
    background.supervise("crl-record", crl_record.run, readiness.flag)
    background.supervise("store-probe", probe.run, readiness.flag)
    if generation is not None:  # the shared store emptied under us: noticed, said, restored
        background.supervise("store-generation", generation.run, readiness.flag)
    if reached:
        if generation is not None:
            await generation.start(backend.store, registry, fleet)
    else:  # started before its store: what start-up reads from it runs once it answers
        readiness.flag(START_CHECKS, True)

        async def once_reached() -> None:
            await probe.reached.wait()
            try:
                await check_crl_at_start(data, trust)
            except RevocationListError as exc:
                probe.give_up(str(exc))  # the entry point exits 1 with this line
                return
            if generation is not None:
                await generation.start(backend.store, registry, fleet)
            readiness.flag(START_CHECKS, False)

        background.supervise(START_CHECKS, once_reached, readiness.flag)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # a worker: its supervisor serves /metrics for all
        mirror = metrics.mirror_live_gauges()
        background.supervise("metrics-mirror", lambda: _every(1.0, mirror))
    for watcher in watchers:
        watcher.start(readiness.flag)
    audit = AuditLog(
        data, settings.audit_keep_count, settings.audit_keep_days * 86_400, settings.store_retry_s
    )
    background.supervise("audit-backlog", audit.keep_storing)
    scheduler = Scheduler(
        ScheduleStore(data),
        fleet,
        DeviceLabels(data),
        sounds,
        announcer,
        schedule_audit(audit),
        settings.schedule_tick_s,
        settings.schedule_grace_s,
    )
    stack.push_async_callback(scheduler.close)  # its runs in flight, before the announcer closes
    if generation is not None:
        generation.audit = audit
    app = AudioServer(
        settings,
        server,
        registry,
        store,
        clock,
        trust,
        watchers,
        0,  # the device port, once bound below
        readiness,
        fleet,
        handshakes,
        background,
        stack,  # replaced by the stack's contents once the whole start succeeded
        sounds,
        audit,
        probe,
        announcer,
        scheduler,
        talks,
        generation,
    )
    add_renewal(app, server, authenticator)
    await start_operator_side(app, data, tls, authenticator, stack)
    background.supervise("schedules", scheduler.run, readiness.flag)  # every node; claims pick one
    if settings.metrics_bind:
        app.metrics = start_metrics_server(settings.metrics_bind)
        stack.callback(app.metrics.stop)
    if settings.health_bind:
        app.health = readiness.health = await start_health_server(settings.health_bind)
        stack.push_async_callback(app.health.stop)
    # Devices last: none connects to a server whose start then fails. (gRPC keeps the socket of a
    # server bound but never started, so binding waits until nothing else can fail.)
    app.port = port = listen(server, settings.bind, "device mTLS", settings, tls, handshakes)
    await server.start()
    readiness.start()
    log.info(
        "server.listening",
        extra={
            "bind": settings.bind,
            "port": port,
            "mtls": True,
            "modes": settings.mode_count,
            "reflection": settings.reflection,
        },
    )
    return app


def schedule_audit(audit: AuditLog) -> Callable[[Schedule, Run], Awaitable[None]]:
    """How the schedule runner audits a run or a miss: under the schedule's tenant, in the name of
    the operator who created it (role ``schedule``: no one called)."""

    async def record(schedule: Schedule, run: Run) -> None:
        code = {"ran": "OK", "missed": "DEADLINE_EXCEEDED"}.get(run.result, "FAILED_PRECONDITION")
        await audit.record(
            AuditEvent(
                operator=schedule.created_by,
                role="schedule",
                tenant=schedule.tenant,
                action="ScheduleRun",
                target=schedule.id,
                parameters={
                    "result": run.result,
                    "occurrence": run.occurrence,
                    "node": run.node,
                    "announcement": run.announcement,
                    "targeted": run.targeted,
                    "started": run.started,
                    "offline": run.offline,
                    "refused": run.refused,
                    "missed": run.missed,
                },
                result=code,
                message=run.message,
            )
        )

    return record


def listen(
    server: grpc.aio.Server,
    bind: str,
    what: str,
    settings: ServerSettings,
    tls: ReloadingServerTls,
    handshakes: HandshakeMonitor | None,
    client_auth: bool = True,
) -> int:
    """Bind ``server`` to ``bind`` with the server's TLS (mTLS unless ``client_auth`` is False);
    one clear line if it cannot."""
    try:
        if settings.worker_index < 0:  # workers share the port with their siblings on purpose
            ensure_bindable(bind, what)
        started = handshakes.handshake_started if handshakes is not None else None
        return int(server.add_secure_port(bind, tls.credentials(started, client_auth)))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {bind} ({what}): {exc}") from None


def device_server(
    settings: ServerSettings,
    authenticator: Authenticator,
    registry: DeviceRegistry,
    trust: TrustState,
    handshakes: HandshakeMonitor,
) -> grpc.aio.Server:
    """The device service (the three streams and sessions, mTLS), not bound yet."""
    # Renew checks the session token itself, so that its refusals are counted and audited as renewals.
    mtls_only = {CREATE_SESSION_METHOD, RENEW_METHOD, *([REFLECTION_METHOD] if settings.reflection else [])}
    interceptor = AuthInterceptor(
        authenticator, CallLimiter(settings.max_calls_per_device), frozenset(mtls_only), handshakes
    )
    server = grpc.aio.server(interceptors=[interceptor], options=grpc_options(settings))
    pb_grpc.add_DeviceServiceServicer_to_server(
        DeviceService(
            registry,
            StreamPolicy(
                status_poll_s=settings.status_poll_interval_s,
                audio_max_late_s=settings.audio_max_late_ms / 1000,
                audio_write_timeout_s=settings.audio_write_timeout_s,
                link_stall_s=settings.link_stall_s,
            ),
        ),
        server,
    )
    spb_grpc.add_SessionServiceServicer_to_server(SessionService(registry, authenticator, trust), server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (DEVICE_SERVICE, SESSION_SERVICE, reflection.SERVICE_NAME), server
        )
    return server


def file_watchers(settings: ServerSettings, tls: ReloadingServerTls, trust: TrustState) -> list[FileWatcher]:
    """Reload TLS material, signing keys and the CRL when their files change."""
    assert settings.crl_path and settings.signing_key_dir

    def reload_tls() -> None:
        tls.reload()  # refuses a bad pair (raises) before anything changes; every listener follows
        trust.reload_issuers()  # device certificates must be issued directly by the new bundle

    return [
        FileWatcher("server-tls", tls.paths, reload_tls, settings.reload_interval_s),
        FileWatcher(
            "signing-keys", [settings.signing_key_dir], trust.reload_keys, settings.reload_interval_s
        ),
        FileWatcher(
            "crl",
            [settings.crl_path],
            trust.reload_revocations,
            settings.reload_interval_s,
            every_interval=trust.check_crl_fresh,
        ),
    ]


async def start_operator_side(
    app: AudioServer,
    data: SharedData,
    tls: ReloadingServerTls,
    authenticator: Authenticator,
    stack: AsyncExitStack,
) -> None:
    """The operator API and the web console, each registering its stop before it starts."""
    settings = app.settings
    sessions = (
        ConsoleSessions(data, settings.console_session_ttl_s, app.trust.is_revoked)
        if settings.console_bind
        else None
    )
    admin = FleetAdmin(
        app.fleet,
        app.audit,
        app.sounds,
        settings.mode_count,
        DeviceLabels(data),
        app.announcer,
        app.scheduler.store,
        settings.schedule_max_per_tenant,
        app.talks,
        settings.talk_max_s,
        sessions,
        settings.console_base_url,
    )
    await start_enrolment(app, data, tls, admin, stack)
    if settings.admin_bind:
        app.admin = admin_server(authenticator, admin, settings, app.handshakes)
        stack.push_async_callback(app.admin.stop, 0.5)  # ends watches too
        app.admin_port = listen(app.admin, settings.admin_bind, "operator API", settings, tls, app.handshakes)
        await app.admin.start()
        log.info("admin.listening", extra={"bind": settings.admin_bind, "port": app.admin_port})
    if sessions is not None:
        app.console = console = Console(admin, sessions)
        if settings.worker_index < 0:
            ensure_bindable(settings.console_bind, "console")
        stack.push_async_callback(console.stop)  # also what a half-way start set up
        app.console_port = await console.start(
            settings.console_bind, tls.https_context(), reuse_port=settings.worker_index >= 0
        )
        if not settings.console_url:  # the port may have been picked by the system (port 0)
            host = settings.console_base_url.rpartition(":")[0]
            admin.console_url = f"{host}:{app.console_port}"


def add_renewal(app: AudioServer, server: grpc.aio.Server, authenticator: Authenticator) -> None:
    """RenewalService on the device port (mTLS + session token). The issuing CA is read per call:
    without one, renewals are refused (UNAVAILABLE, logged) and everything else works."""
    settings = app.settings
    assert settings.issuing_cert and settings.issuing_key and settings.client_ca
    service = Renewals(
        app.registry,
        authenticator,
        app.trust,
        app.audit,
        IssuingFiles(settings.issuing_cert, settings.issuing_key, settings.client_ca),
        settings.trust_domain,
        dt.timedelta(seconds=settings.device_cert_lifetime_s),
    )
    rpb_grpc.add_RenewalServiceServicer_to_server(service, server)


async def start_enrolment(
    app: AudioServer, data: SharedData, tls: ReloadingServerTls, admin: FleetAdmin, stack: AsyncExitStack
) -> None:
    """The enrolment service on a listener of its own, server-only TLS (off without --enroll-bind).
    It starts only with a usable issuing CA; the operator API's code methods work only then."""
    settings = app.settings
    if not settings.enroll_bind:
        return
    assert settings.issuing_cert and settings.issuing_key and settings.client_ca
    files = IssuingFiles(settings.issuing_cert, settings.issuing_key, settings.client_ca)
    await asyncio.to_thread(files.load)  # PkiError: the entry point says which file, exit 1
    app.enrolment_codes = codes = EnrolmentCodes(data)
    app.enrolment_requests = requests = PendingRequests(data)
    claim_codes = ClaimCodes(data)
    admin.enrolment = EnrolmentConfig(
        codes, settings.enroll_code_ttl_s, tls.ca_fingerprint, claim_codes, requests
    )
    service = Enrolment(
        codes,
        app.audit,
        files,
        settings.trust_domain,
        dt.timedelta(seconds=settings.device_cert_lifetime_s),
        FailedAttempts(settings.enroll_failures_per_min),
    )
    limits = OpenEnrolment(
        settings.enroll_pending_ttl_s, settings.enroll_pending_per_tenant, settings.enroll_poll_interval_s
    )
    service.desk = ClaimDesk(
        service, claim_codes, requests, limits, PerAddress(settings.enroll_claims_per_min)
    )
    options = dict(grpc_options(settings))
    options.update(
        {
            "grpc.max_receive_message_length": ENROL_MAX_MESSAGE,
            "grpc.max_send_message_length": ENROL_MAX_MESSAGE,
        }
    )
    app.enroll = server = grpc.aio.server(
        interceptors=[OpenInterceptor()],
        options=list(options.items()),
        maximum_concurrent_rpcs=ENROL_CONCURRENT_CALLS,
    )
    epb_grpc.add_EnrollmentServiceServicer_to_server(service, server)
    stack.push_async_callback(server.stop, 0.5)
    app.enroll_port = listen(
        server, settings.enroll_bind, "enrolment", settings, tls, None, client_auth=False
    )
    await server.start()
    log.info("enroll.listening", extra={"bind": settings.enroll_bind, "port": app.enroll_port})
