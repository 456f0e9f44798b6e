"""``audio-admin`` connection settings: flags, ``AUDIO_ADMIN_*`` environment variables or ``.env``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth import pki
from auth.errors import PkiError
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial, load_tls_material

ENV_PREFIX = "AUDIO_ADMIN_"


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    server: str = Field("127.0.0.1:50052", description="Operator API HOST:PORT (the server's --admin-bind)")
    server_name: str | None = Field(
        None,
        description="Expected server certificate name",
        json_schema_extra={"default_text": "the host of --server"},
    )
    pki_dir: Path = Field(
        Path("certs/dev"), description="Provisioned PKI directory (with ca.crt, operators/)"
    )
    tenant: str | None = Field(
        None,
        description="The tenant to act on; with --operator also picks operators/<tenant>/<operator>.crt|key",
    )
    operator: str | None = Field(None, description="Operator name: picks its certificate in --pki-dir")
    platform: bool = Field(False, description="Use a platform operator (operators/_platform/<operator>.*)")
    cert: Path | None = Field(None, description="Operator certificate (instead of --pki-dir/--operator)")
    key: Path | None = Field(None, description="Operator private key (with --cert)")
    ca: Path | None = Field(
        None, description="CA bundle (with --cert)", json_schema_extra={"default_text": "--pki-dir/ca.crt"}
    )
    timeout_s: float = Field(15.0, gt=0, le=3600, description="Seconds to wait for each call")

    @model_validator(mode="after")
    def _one_way_to_pick_the_certificate(self) -> AdminSettings:
        if self.cert is None and self.operator is None:
            raise ValueError(
                "name the operator (--operator with --tenant or --platform) or give --cert/--key"
            )
        if self.cert is not None and self.key is None:
            raise ValueError("--cert needs --key")
        if self.cert is None and not self.platform and self.tenant is None:
            raise ValueError("--operator needs --tenant (or --platform for a platform operator)")
        return self

    def material(self) -> TlsMaterial:
        """The operator's certificate, key and the CA, read and cross-checked (``PkiError`` if not)."""
        ca = self.ca or self.pki_dir / pki.CA_CERT
        if self.cert is not None:
            assert self.key is not None
            return load_tls_material(self.cert, self.key, ca)
        assert self.operator is not None
        tenant = None if self.platform else self.tenant
        try:
            operator = OperatorIdentity(self.operator, Role.VIEWER, tenant)  # the role is read by the server
        except ValueError as exc:
            raise PkiError(str(exc)) from None
        cert, key = pki.operator_paths(self.pki_dir, operator)
        return load_tls_material(cert, key, ca)
