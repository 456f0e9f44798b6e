"""Device settings: CLI flags, env (AUDIO_DEVICE_*) and an optional .env file.

Certificate paths default to a PKI directory laid out by gen_certs.py
(``PKI_DIR/devices/<tenant>/<device>.crt|key`` and ``PKI_DIR/ca.crt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AUDIO_DEVICE_"


class DeviceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        cli_kebab_case=True,
        cli_prog_name="audio-device",
        cli_implicit_flags=True,
    )

    server: str = Field("localhost:50051", description="Server HOST:PORT")
    server_name: str | None = Field(None, description="Expected server certificate name, if not the host")
    pki_dir: Path = Field(Path("certs/dev"), description="Provisioned PKI directory")
    tenant: str = Field("acme", description="Tenant (selects the cert in PKI_DIR when --cert is unset)")
    device: str = Field("dev-1", description="Device id (selects the cert in PKI_DIR when --cert is unset)")
    cert: Path | None = Field(None, description="Device certificate (default PKI_DIR/devices/T/D.crt)")
    key: Path | None = Field(None, description="Device private key (default PKI_DIR/devices/T/D.key)")
    ca: Path | None = Field(None, description="CA bundle that signed the server (default PKI_DIR/ca.crt)")
    record_dir: Path | None = Field(None, description="Write every received sound to a WAV file here")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["auto", "json", "text"] = Field("auto", description="Log format")

    @model_validator(mode="after")
    def _fill_paths(self) -> DeviceSettings:
        base = self.pki_dir / "devices" / self.tenant
        self.cert = self.cert or base / f"{self.device}.crt"
        self.key = self.key or base / f"{self.device}.key"
        self.ca = self.ca or self.pki_dir / "ca.crt"
        return self
