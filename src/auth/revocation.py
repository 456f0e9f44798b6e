"""Certificate revocation: an X.509 CRL signed by the fleet CA.

``gen_certs.py revoke`` adds serials to ``crl.pem`` (keeping earlier entries);
the server reloads the file when it changes and refuses, and disconnects,
certificates whose serial is listed. A CRL not signed by the CA is rejected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from auth.errors import RevocationListError
from auth.pki import PUBLIC_MODE, CertifiedKey, write_atomic

CRL_FILE = "crl.pem"
CRL_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[int]
    issued_at: dt.datetime | None = None

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials


EMPTY = RevocationList(frozenset())


def revoke(
    ca: CertifiedKey, crl_path: Path, serials: list[int], now: dt.datetime | None = None
) -> RevocationList:
    """Write a new CRL with the existing entries plus ``serials``; return what it lists."""
    now = now or dt.datetime.now(dt.UTC)
    existing: list[x509.RevokedCertificate] = []
    if crl_path.exists():
        existing = list(load_crl(crl_path, [ca.cert]).entries)
    listed = {entry.serial_number for entry in existing}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
    )
    for entry in existing:
        builder = builder.add_revoked_certificate(entry)
    for serial in serials:
        if serial not in listed:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
            listed.add(serial)
    crl = builder.sign(ca.key, hashes.SHA256())
    write_atomic(crl_path, crl.public_bytes(Encoding.PEM), PUBLIC_MODE, force=True)
    return RevocationList(frozenset(listed), now)


@dataclass(frozen=True)
class _Loaded:
    entries: list[x509.RevokedCertificate]
    crl: x509.CertificateRevocationList


def load_crl(path: Path, issuers: list[x509.Certificate]) -> _Loaded:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        raise RevocationListError(f"CRL not found: {path}") from None
    except (ValueError, OSError) as exc:
        raise RevocationListError(f"{path}: not a PEM CRL ({type(exc).__name__})") from None
    for issuer in issuers:
        public = issuer.public_key()
        if (
            issuer.subject == crl.issuer
            and isinstance(public, ec.EllipticCurvePublicKey)
            and (crl.is_signature_valid(public))
        ):
            return _Loaded(list(crl), crl)
    raise RevocationListError(f"{path}: CRL is not signed by a trusted CA")


def read_revocations(path: Path, issuers: list[x509.Certificate]) -> RevocationList:
    """The serials a CRL file lists; a missing file means nothing is revoked."""
    if not path.exists():
        return EMPTY
    loaded = load_crl(path, issuers)
    return RevocationList(
        frozenset(entry.serial_number for entry in loaded.entries), loaded.crl.last_update_utc
    )
