"""Device settings: CLI flags, env (AUDIO_DEVICE_*) and an optional .env file.

Certificate paths default to a PKI directory laid out by gen_certs.py
(``PKI_DIR/devices/<tenant>/<device>.crt|key`` and ``PKI_DIR/ca.crt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth.identity import DEFAULT_TRUST_DOMAIN

ENV_PREFIX = "AUDIO_DEVICE_"


class DeviceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",  # unknown AUDIO_DEVICE_* names are refused by comms.cli, with a suggestion
    )

    server: str = Field("localhost:50051", description="Server HOST:PORT")
    server_name: str | None = Field(
        None,
        description="Expected server certificate name",
        json_schema_extra={"default_text": "the host of --server"},
    )
    pki_dir: Path = Field(Path("certs/dev"), description="Provisioned PKI directory")
    tenant: str = Field("acme", description="Tenant (selects the cert in PKI_DIR when --cert is unset)")
    device: str = Field("dev-1", description="Device id (selects the cert in PKI_DIR when --cert is unset)")
    cert: Path | None = Field(
        None,
        description="Device certificate",
        json_schema_extra={"default_text": "PKI_DIR/devices/TENANT/DEVICE.crt"},
    )
    key: Path | None = Field(
        None,
        description="Device private key",
        json_schema_extra={"default_text": "PKI_DIR/devices/TENANT/DEVICE.key"},
    )
    ca: Path | None = Field(
        None,
        description="CA bundle that signed the server",
        json_schema_extra={"default_text": "PKI_DIR/ca.crt"},
    )
    record_dir: Path | None = Field(
        None,
        description="Write every received sound to a WAV file here",
        json_schema_extra={"default_text": "off (device-recordings/ with --simulate and no speaker)"},
    )
    trust_domain: str = Field(DEFAULT_TRUST_DOMAIN, description="SPIFFE trust domain of this fleet")
    button_pins: list[int] = Field(
        [17, 27, 22, 23],
        min_length=4,
        max_length=4,
        description="BCM pins of BUTTON_1..4 (Connect, Mode, Stop, Play), wired to ground",
    )
    led_pins: list[tuple[int, int, int]] = Field(
        [(5, 6, 13), (19, 26, 12), (16, 20, 21), (4, 18, 24), (25, 8, 7), (9, 10, 11)],
        min_length=6,
        max_length=6,
        description="BCM (red, green, blue) pins of led_0..led_5",
    )
    hold_time_s: float = Field(1.0, gt=0, le=10, description="Press this long to send HOLD")
    jitter_ms: int = Field(
        60, ge=20, le=1000, description="Audio jitter buffer before a sound starts playing"
    )
    max_frame_ms: Literal[20, 60] = Field(
        60,
        description="Longest audio packet to ask the server for: 60 ms means a third of the messages",
    )
    max_behind_ms: int = Field(
        300,
        ge=20,
        le=10_000,
        description="Audio queued past the jitter buffer beyond this is dropped (oldest first)",
    )
    audio_device: str | None = Field(
        None,
        description="sounddevice output device (name or index)",
        json_schema_extra={"default_text": "the system's default output"},
    )
    backoff_base_s: float = Field(0.5, gt=0, description="First reconnect delay ceiling (full jitter)")
    backoff_cap_s: float = Field(30.0, gt=0, description="Largest reconnect delay")
    backoff_stable_s: float = Field(10.0, gt=0, description="A connection up this long resets the backoff")
    revoked_retry_s: float = Field(300.0, gt=0, description="Retry interval once the certificate is revoked")
    clone_retry_s: float = Field(
        3600.0, gt=0, description="Retry interval once told another device uses this certificate (a clone)"
    )
    ack_timeout_s: float = Field(5.0, gt=0, description="No ack within this: reconnect")
    renew_fraction: float = Field(
        2 / 3,
        gt=0.1,
        lt=0.95,
        description="Renew the certificate when this share of its lifetime has passed",
    )
    renew_jitter: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="Renew up to this share of the lifetime earlier, at random (not a whole fleet at once)",
    )
    renew_retry_s: float = Field(
        300.0, gt=0, description="A failed or refused renewal is tried again after this"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["auto", "json", "text"] = Field("auto", description="Log format")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_paths(self) -> DeviceSettings:
        base = self.pki_dir / "devices" / self.tenant
        self.cert = self.cert or base / f"{self.device}.crt"
        self.key = self.key or base / f"{self.device}.key"
        self.ca = self.ca or self.pki_dir / "ca.crt"
        return self
