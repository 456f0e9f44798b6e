"""Certificate revocation: an X.509 CRL signed by the fleet CA.

``gen_certs.py revoke`` adds serials to ``crl.pem`` (keeping earlier entries,
CRL number + 1); the server reloads the file when it changes and refuses, and
disconnects, certificates whose serial is listed. A CRL that is missing, does
not parse, is not signed by a CA of the bundle, or is older than the one in
force (lower CRL number; else earlier lastUpdate) is never swapped in: each
case raises its own ``RevocationListError``, whose ``reason`` labels logs and
metrics. A CRL past its nextUpdate is still a valid list of revoked serials
(``RevocationList.stale`` says so; the server reports it and keeps enforcing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auth.errors import (
    RevocationListMissing,
    RevocationListUnreadable,
    RevocationListUntrusted,
)
from auth.pki import PUBLIC_MODE, CertifiedKey, write_material

CRL_FILE = "crl.pem"
CRL_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[int]
    issued_at: dt.datetime | None = None  # lastUpdate
    number: int | None = None  # the CRLNumber extension (RFC 5280 5.2.3), when present
    next_update: dt.datetime | None = None
    issuer_key: str | None = None  # SHA-256 of the signing CA's public key: CRLs are ordered per CA

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def older_than(self, other: RevocationList) -> bool:
        """Issued before ``other`` by the same CA: a lower CRL number, else an earlier lastUpdate.

        CRLs of different CAs (a CA rotation) are not ordered: numbers restart with each CA."""
        if self.issuer_key is None or self.issuer_key != other.issuer_key:
            return False
        if self.number is not None and other.number is not None:
            return self.number < other.number
        if self.issued_at is not None and other.issued_at is not None:
            return self.issued_at < other.issued_at
        return False

    def stale(self, now: dt.datetime) -> bool:
        """Past its nextUpdate: a newer CRL should exist (still enforced: it lists revoked serials)."""
        return self.next_update is not None and now > self.next_update

    def describe(self) -> str:
        """How logs and messages name this CRL: its number, else its lastUpdate."""
        if self.number is not None:
            return f"#{self.number}"
        return self.issued_at.isoformat() if self.issued_at else "none"


EMPTY = RevocationList(frozenset())


def key_id(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def revoke(
    ca: CertifiedKey,
    crl_path: Path,
    serials: list[int],
    now: dt.datetime | None = None,
    validity: dt.timedelta = CRL_VALIDITY,
) -> RevocationList:
    """Write a new CRL with the existing entries plus ``serials``; return what it lists."""
    now = now or dt.datetime.now(dt.UTC)
    existing: list[x509.RevokedCertificate] = []
    number = 1
    if crl_path.exists():
        loaded = load_crl(crl_path, [ca.cert])
        existing = loaded.entries
        number = (crl_number(loaded.crl) or 0) + 1
        now = max(now, loaded.crl.last_update_utc)  # never issued "before" the one it replaces
    listed = {entry.serial_number for entry in existing}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
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
    write_material(crl_path, crl.public_bytes(Encoding.PEM), PUBLIC_MODE, force=True)
    return RevocationList(frozenset(listed), now, number, now + validity, key_id(ca.cert))


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


@dataclass(frozen=True)
class _Loaded:
    entries: list[x509.RevokedCertificate]
    crl: x509.CertificateRevocationList
    issuer: x509.Certificate


def load_crl(path: Path, issuers: list[x509.Certificate]) -> _Loaded:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RevocationListMissing(f"CRL not found: {path}") from None
    except OSError as exc:
        raise RevocationListUnreadable(f"{path}: cannot read the CRL ({type(exc).__name__})") from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise RevocationListUnreadable(f"{path}: not a PEM CRL ({type(exc).__name__})") from None
    for issuer in issuers:
        public = issuer.public_key()
        if (
            issuer.subject == crl.issuer
            and isinstance(public, ec.EllipticCurvePublicKey)
            and (crl.is_signature_valid(public))
        ):
            return _Loaded(list(crl), crl, issuer)
    raise RevocationListUntrusted(f"{path}: CRL is not signed by a trusted CA")


def read_revocations(path: Path, issuers: list[x509.Certificate]) -> RevocationList:
    """The serials a CRL file lists, with what orders it; raises when the file cannot be used
    (a missing file too: whether that may mean "nothing revoked" is the caller's decision)."""
    loaded = load_crl(path, issuers)
    return RevocationList(
        frozenset(entry.serial_number for entry in loaded.entries),
        loaded.crl.last_update_utc,
        crl_number(loaded.crl),
        loaded.crl.next_update_utc,
        key_id(loaded.issuer),
    )
