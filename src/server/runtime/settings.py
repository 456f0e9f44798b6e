"""Server settings: one object, built at start-up from CLI flags, env (AUDIO_SERVER_*) and .env.

Every field is documented here; docs/reference/server-settings.md is generated from it
(``make reference``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth.identity import DEFAULT_TRUST_DOMAIN, validate_trust_domain
from server.devices.leds import MAX_MODES

ENV_PREFIX = "AUDIO_SERVER_"
KIB = 1024


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",  # unknown AUDIO_SERVER_* names are refused by comms.cli, with a suggestion
    )

    # --- network and TLS ---
    bind: str = Field("0.0.0.0:50051", description="HOST:PORT the mTLS DeviceService listens on")
    pki_dir: Path = Field(Path("certs/dev"), description="Directory with ca.crt, server.crt, server.key")
    server_cert: Path | None = Field(
        None, description="Server certificate", json_schema_extra={"default_text": "PKI_DIR/server.crt"}
    )
    server_key: Path | None = Field(
        None, description="Server private key", json_schema_extra={"default_text": "PKI_DIR/server.key"}
    )
    client_ca: Path | None = Field(
        None,
        description="CA bundle that signs device certificates",
        json_schema_extra={"default_text": "PKI_DIR/ca.crt"},
    )
    trust_domain: str = Field(DEFAULT_TRUST_DOMAIN, description="SPIFFE trust domain of device identities")
    crl_path: Path | None = Field(
        None,
        description="CRL of revoked device certificates",
        json_schema_extra={"default_text": "PKI_DIR/crl.pem"},
    )
    signing_key_dir: Path | None = Field(
        None,
        description="Directory of Ed25519 token signing keys",
        json_schema_extra={"default_text": "PKI_DIR/signing"},
    )
    reload_interval_s: float = Field(
        0.5, gt=0, le=60, description="How often CRL and signing keys are checked for changes"
    )

    # --- enrolment (devices without a certificate get one for a one-time code) ---
    enroll_bind: str = Field(
        "",
        description="Enrolment service (EnrollmentService) HOST:PORT, server-only TLS (devices have no "
        "certificate yet); never the device port; empty disables",
    )
    issuing_cert: Path | None = Field(
        None,
        description="Issuing CA certificate the enrolment service signs with (gen_certs.py issuing-ca)",
        json_schema_extra={"default_text": "PKI_DIR/issuing/issuing-ca.crt"},
    )
    issuing_key: Path | None = Field(
        None,
        description="Issuing CA private key (never the root's)",
        json_schema_extra={"default_text": "PKI_DIR/issuing/issuing-ca.key"},
    )
    enroll_code_ttl_s: float = Field(
        86_400.0, ge=60, le=30 * 86_400, description="How long an enrolment code stays valid by default"
    )
    device_cert_lifetime_s: int = Field(
        30 * 86_400,
        ge=10,
        le=825 * 86_400,
        description="Lifetime of device certificates issued at enrolment and renewal (never past the "
        "issuing CA's); devices renew at two thirds of it",
    )
    enroll_failures_per_min: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Failed enrolment attempts per client address and minute, then refused",
    )
    enroll_pending_ttl_s: float = Field(
        86_400.0,
        ge=60,
        le=30 * 86_400,
        description="How long an open-enrolment request (claim code) waits for an operator's decision",
    )
    enroll_pending_per_tenant: int = Field(
        100, ge=1, le=10_000, description="Open-enrolment requests a tenant may have waiting at once"
    )
    enroll_claims_per_min: int = Field(
        5, ge=1, le=10_000, description="Open-enrolment requests per client address and minute, then refused"
    )
    enroll_poll_interval_s: float = Field(
        5.0, ge=0.1, le=300, description="How often a device waiting for approval is told to poll"
    )

    # --- session tokens ---
    token_issuer: str = Field("audio-server", min_length=1, description="JWT iss of session tokens")
    token_audience: str = Field("audio-device-service", min_length=1, description="JWT aud of session tokens")
    token_ttl_s: int = Field(900, ge=1, le=86_400, description="Session token lifetime")
    token_leeway_s: int = Field(30, ge=0, le=300, description="Clock skew tolerated on exp/nbf/iat")

    # --- abuse limits ---
    event_rate_per_s: float = Field(10.0, gt=0, description="Button events per second a device may send")
    event_burst: int = Field(20, ge=1, description="Button events a device may send in a burst")
    max_calls_per_device: int = Field(
        8,
        ge=7,
        le=1000,
        description="Concurrent calls per device identity (at least 7: a certificate renewal briefly "
        "holds two connections' three streams each, and the Renew call)",
    )

    # --- operations ---
    health_bind: str = Field(
        "0.0.0.0:8081", description="Plaintext gRPC health service HOST:PORT (nothing else); empty disables"
    )
    metrics_bind: str = Field("0.0.0.0:9464", description="Prometheus metrics HTTP HOST:PORT; empty disables")

    # --- operator API ---
    admin_bind: str = Field(
        "127.0.0.1:50052",
        description="Operator API (FleetService) HOST:PORT, mTLS with operator certificates; never the "
        "device port; empty disables",
    )
    console_bind: str = Field(
        "",
        description="Web console HOST:PORT (HTTPS, the server certificate); empty disables (make run: on)",
    )
    console_url: str = Field(
        "",
        description="Base URL of the console in sign-in links",
        json_schema_extra={"default_text": "https://<console-bind host>:<port>"},
    )
    console_session_ttl_s: float = Field(
        8 * 3600.0, ge=60, le=7 * 86_400, description="How long a console sign-in lasts (seconds)"
    )
    audit_keep_count: int = Field(
        10_000, ge=100, le=1_000_000, description="Audit events kept per tenant (and in the platform log)"
    )
    audit_keep_days: float = Field(
        90.0, gt=0, le=3650, description="Audit events older than this are dropped"
    )
    sound_max_bytes: int = Field(
        20 * KIB * KIB, ge=64 * KIB, le=200 * KIB * KIB, description="Largest sound file UploadSound accepts"
    )
    sound_max_seconds: float = Field(
        600.0, gt=0, le=3600, description="Longest sound (in seconds) UploadSound accepts"
    )
    reflection: bool = Field(False, description="Serve gRPC reflection on the mTLS port (for grpcurl)")
    drain_delay_s: float = Field(
        0.0, ge=0, le=60, description="On SIGTERM, keep serving this long after health turns NOT_SERVING"
    )

    # --- application ---
    mode_count: int = Field(5, ge=5, le=MAX_MODES, description="Number of modes the Mode button cycles")
    status_poll_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between status GETs (battery, buttons; also the link's heartbeat)",
    )
    link_stall_s: float = Field(
        3.0,
        gt=0,
        le=600,
        description="A status request unanswered this long means the link stalled: events are not applied, "
        "audio waits",
    )
    audio_lead_ms: int = Field(100, ge=0, le=1000, description="How far ahead of real time audio is sent")
    announce_lead_ms: int = Field(
        300,
        ge=20,
        le=10_000,
        description="How far ahead an announcement's start instant is set: time for every node to "
        "hear of it through the bus and load its sound",
    )
    schedule_tick_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each node looks for due schedule occurrences (an occurrence starts up to "
        "this late)",
    )
    schedule_grace_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="A schedule occurrence that could not start within this many seconds of its time "
        "(every node down) is skipped and recorded as missed, never played late",
    )
    schedule_max_per_tenant: int = Field(
        100, ge=1, le=10_000, description="Announcement schedules a tenant may keep"
    )
    talk_max_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="The longest a push-to-talk may last (seconds); then it ends on every device",
    )
    gc_young_threshold: int = Field(
        5000,
        ge=100,
        le=1_000_000,
        description="Allocations between two collections of Python's youngest generation (Python's "
        "default: 700). Higher: fewer collections, and far fewer objects aged into the full "
        "collections that pause every stream",
    )
    audio_max_late_ms: int = Field(
        200, ge=20, le=5000, description="Audio later than this at hand-off is skipped (the live edge)"
    )
    audio_write_timeout_s: float = Field(
        10.0, gt=0, le=600, description="An audio write stuck this long ends the session (device not reading)"
    )
    content_dir: Path | None = Field(None, description="Directory of mode-<N>.<ext> sound files")
    cache_dir: Path | None = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "audio-server",
        description="Where encoded clips are cached; empty to disable",
        json_schema_extra={"default_text": "$XDG_CACHE_HOME/audio-server (~/.cache/audio-server)"},
    )
    opus_bitrate: int = Field(64_000, ge=6_000, le=510_000, description="Opus bitrate for encoded clips")
    state_backend: Literal["sqlite", "memory", "redis"] = Field(
        "sqlite",
        description="Where device records live: sqlite (one process, a file), redis (shared by several "
        "processes and replicas), memory (tests)",
    )
    redis_url: str = Field(
        "",
        description="Redis for state_backend=redis: redis://HOST:PORT/DB, or rediss:// for TLS "
        "(no password in the URL: use redis_password_file)",
    )
    redis_ca_file: Path | None = Field(
        None, description="CA bundle that signs the Redis server's certificate (rediss://)"
    )
    redis_password_file: Path | None = Field(None, description="File holding the Redis password")
    workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Server processes sharing the port (SO_REUSEPORT) under one supervisor; "
        "auto or 0 = one per core; more than 1 needs state_backend=redis",
    )
    worker_index: int = Field(
        -1, ge=-1, le=63, description="Internal: set by the supervisor on the workers it starts"
    )
    node_id: str = Field(
        "",
        max_length=128,
        description="This server process's name in the fleet (presence, bus)",
        json_schema_extra={"default_text": "HOSTNAME-PID (in Kubernetes: the pod name and pid)"},
    )
    presence_lease_s: float = Field(
        10.0, ge=1, le=300, description="A dead node's devices read as offline within this (shared store)"
    )
    store_retry_s: float = Field(
        1.0, gt=0, le=60, description="While the state store fails, how often queued writes are retried"
    )
    store_probe_interval_s: float = Field(
        2.0, gt=0, le=60, description="How often the state store is probed, so readiness follows it unasked"
    )
    store_start_timeout_s: float = Field(
        0.0,
        ge=0,
        description="Started without its state store, wait this long for it, then exit 1; 0 = wait for good",
    )
    state_path: Path = Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "audio-server" / "devices.sqlite3",
        description="SQLite file for device records (state_backend=sqlite); make run uses var/",
        json_schema_extra={
            "default_text": "$XDG_STATE_HOME/audio-server/devices.sqlite3 (~/.local/state/audio-server/...)"
        },
    )

    # --- lifecycle and hardening (see shared GRPC notes for the reasoning) ---
    shutdown_grace_s: float = Field(10.0, ge=0, le=600, description="Drain time on SIGTERM/SIGINT")
    max_message_bytes: int = Field(64 * KIB, ge=4 * KIB, description="Max gRPC message size in/out")
    max_metadata_bytes: int = Field(8 * KIB, ge=1 * KIB, description="Max request metadata size")
    max_concurrent_streams: int = Field(8, ge=3, description="HTTP/2 streams per connection")
    keepalive_time_s: float = Field(5.0, gt=0, description="Server keepalive ping interval")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="Keepalive ping ack timeout")
    min_client_ping_interval_s: float = Field(
        4.0, gt=0, description="Min interval between client pings without data"
    )
    max_connection_idle_s: float = Field(300.0, gt=0, description="Close connections idle this long")
    max_connection_age_s: float = Field(3600.0, gt=0, description="Force re-handshake after this long")
    max_connection_age_grace_s: float = Field(60.0, ge=0, description="Grace after max connection age")
    handshake_timeout_s: float = Field(10.0, gt=0, description="TLS handshake timeout")

    # --- logging ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json lines, key=value text, or auto (text on a terminal)"
    )

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        return validate_trust_domain(value)

    @field_validator("bind", "health_bind", "metrics_bind", "admin_bind", "console_bind", "enroll_bind")
    @classmethod
    def _bind(cls, value: str, info: ValidationInfo) -> str:
        if value == "" and info.field_name != "bind":
            return value  # disabled
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"bind must be HOST:PORT, got {value!r}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("node_id")
    @classmethod
    def _node_id_default(cls, value: str) -> str:
        return value or f"{socket.gethostname()}-{os.getpid()}"

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return 0
        return value

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @model_validator(mode="after")
    def _workers_share_redis(self) -> ServerSettings:
        if self.worker_index < 0 and self.worker_count > 1 and self.state_backend != "redis":
            raise ValueError(
                f"{self.worker_count} workers need state_backend=redis: they share device state through it"
            )
        return self

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> ServerSettings:
        if self.state_backend == "redis" and not self.redis_url:
            raise ValueError("state_backend=redis needs redis_url (e.g. redis://localhost:6379/0)")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError("redis_url must start with redis:// or rediss://")
        return self

    @model_validator(mode="after")
    def _fill_paths(self) -> ServerSettings:
        self.server_cert = self.server_cert or self.pki_dir / "server.crt"
        self.server_key = self.server_key or self.pki_dir / "server.key"
        self.client_ca = self.client_ca or self.pki_dir / "ca.crt"
        self.crl_path = self.crl_path or self.pki_dir / "crl.pem"
        self.signing_key_dir = self.signing_key_dir or self.pki_dir / "signing"
        self.issuing_cert = self.issuing_cert or self.pki_dir / "issuing" / "issuing-ca.crt"
        self.issuing_key = self.issuing_key or self.pki_dir / "issuing" / "issuing-ca.key"
        return self

    @model_validator(mode="after")
    def _schedule_grace_outlasts_a_tick(self) -> ServerSettings:
        if self.schedule_grace_s < 2 * self.schedule_tick_s:
            raise ValueError(
                "schedule_grace_s must be at least twice schedule_tick_s: else an occurrence between two "
                "scans is missed though every node runs"
            )
        return self

    @model_validator(mode="after")
    def _enrolment_apart(self) -> ServerSettings:
        if self.enroll_bind and not self.enroll_bind.endswith(":0") and self.enroll_bind == self.bind:
            raise ValueError("enroll_bind must not be the device port (bind): it has no client auth")
        return self

    @property
    def console_base_url(self) -> str:
        """Where sign-in links point: ``console_url``, else the console's own address."""
        if self.console_url:
            return self.console_url.rstrip("/")
        host, _, port = self.console_bind.rpartition(":")
        host = "localhost" if host in ("", "0.0.0.0", "[::]", "::") else host  # noqa: S104 - a name to dial
        return f"https://{host}:{port}"

    @property
    def audio_lead_s(self) -> float:
        return self.audio_lead_ms / 1000
