"""A device's own certificate, key and CA, checked before any connection attempt.

Every problem gets a message that says what is wrong and what to do, so the
hardware team can fix a Pi without reading a TLS stack trace.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from auth.errors import IdentityError, PkiError
from auth.identity import Identity, identity_from_certificate
from auth.tls import TlsMaterial


class CredentialError(PkiError):
    """The device's certificate files cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class DeviceCredentials:
    tls: TlsMaterial
    identity: Identity
    not_after: dt.datetime
    warnings: list[str] = field(default_factory=list)


def _read(path: Path, what: str) -> bytes:
    if not path.exists():
        raise CredentialError(f"{what} not found: {path} (provision it with gen_certs.py device)")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise CredentialError(f"{what} is not readable by this user: {path} (check owner and mode)") from None
    if not data.strip():
        raise CredentialError(f"{what} is empty: {path}")
    return data


def load_device_credentials(
    cert_path: Path, key_path: Path, ca_path: Path, trust_domain: str, now: dt.datetime | None = None
) -> DeviceCredentials:
    now = now or dt.datetime.now(dt.UTC)
    cert_pem = _read(cert_path, "device certificate")
    key_pem = _read(key_path, "device private key")
    ca_pem = _read(ca_path, "CA certificate")
    warnings = []
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    if mode & 0o077:
        warnings.append(
            f"private key {key_path} is readable by others (mode {mode:o}); run: chmod 600 {key_path}"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CredentialError(f"device certificate is not a PEM certificate: {cert_path}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CredentialError(f"device private key is unreadable or encrypted: {key_path}") from None
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise CredentialError(f"CA file holds no PEM certificate: {ca_path}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise CredentialError(f"private key {key_path} does not belong to certificate {cert_path}")
    if not any(_signed_by(cert, ca) for ca in cas):
        raise CredentialError(f"device certificate {cert_path} is not signed by the CA in {ca_path}")
    if now < cert.not_valid_before_utc:
        raise CredentialError(
            f"device certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(is the device clock right?)"
        )
    if now > cert.not_valid_after_utc:
        raise CredentialError(
            f"device certificate expired on {cert.not_valid_after_utc:%Y-%m-%d} UTC: provision a new one"
        )
    try:
        identity = identity_from_certificate(cert, trust_domain)
    except IdentityError as exc:
        raise CredentialError(f"device certificate carries no device identity: {exc}") from None
    return DeviceCredentials(
        TlsMaterial(cert_pem, key_pem, ca_pem), identity, cert.not_valid_after_utc, warnings
    )


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
