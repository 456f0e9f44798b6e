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

from auth.errors import CertificateNotIssuedByCa, CertificateProfileError, IdentityError, PkiError
from auth.identity import Identity, identity_from_certificate
from auth.profile import check_chain
from auth.tls import TlsMaterial, parse_tls_files


class CredentialError(PkiError):
    """The device's certificate files cannot be used; the message says how to fix it."""

    #: True when waiting cannot fix it (expired, missing, wrong CA); False for a clock still
    #: catching up after boot ("not valid yet"), which a restart a little later may fix.
    permanent = True


@dataclass(frozen=True)
class DeviceCredentials:
    tls: TlsMaterial
    identity: Identity
    not_after: dt.datetime
    warnings: list[str] = field(default_factory=list)
    not_before: dt.datetime | None = None  # with not_after: when the client renews it


def expired_text(not_after: dt.datetime) -> str:
    """The one line a device says when its certificate has expired (start-up or while running)."""
    return (
        f"device certificate expired on {not_after:%Y-%m-%d %H:%M} UTC; an expired certificate cannot "
        "renew: enrol this device again with a new code (audio-device enroll --force ...)"
    )


def load_device_credentials(
    cert_path: Path, key_path: Path, ca_path: Path, trust_domain: str, now: dt.datetime | None = None
) -> DeviceCredentials:
    now = now or dt.datetime.now(dt.UTC)
    try:
        parsed = parse_tls_files(
            cert_path, key_path, ca_path, "device", " (provision it with gen_certs.py device)"
        )
    except PkiError as exc:
        raise CredentialError(str(exc)) from None
    cert = parsed.leaf
    warnings = []
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    if mode & 0o077:
        warnings.append(
            f"private key {key_path} is readable by others (mode {mode:o}); run: chmod 600 {key_path}"
        )
    try:
        issuing = check_chain(cert, parsed.chain, parsed.cas, trust_domain)
    except CertificateNotIssuedByCa:
        raise CredentialError(
            f"device certificate {cert_path} is not signed by the CA in {ca_path} "
            "(nor by an issuing CA of it that follows the certificate in the file)"
        ) from None
    except CertificateProfileError as exc:
        raise CredentialError(f"device certificate {cert_path} cannot be used: {exc}") from None
    if issuing is not None and now > issuing.not_valid_after_utc:
        raise CredentialError(
            f"the issuing CA in {cert_path} expired on {issuing.not_valid_after_utc:%Y-%m-%d} UTC: "
            "enrol the device again"
        )
    if now < cert.not_valid_before_utc:
        error = CredentialError(
            f"device certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(is the device clock right?)"
        )
        error.permanent = False
        raise error
    if now > cert.not_valid_after_utc:
        raise CredentialError(expired_text(cert.not_valid_after_utc))
    try:
        identity = identity_from_certificate(cert, trust_domain)
    except IdentityError as exc:
        raise CredentialError(f"device certificate carries no device identity: {exc}") from None
    return DeviceCredentials(
        parsed.material, identity, cert.not_valid_after_utc, warnings, cert.not_valid_before_utc
    )
