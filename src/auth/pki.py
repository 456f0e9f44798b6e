"""Certificate authority, server and device certificates (EC P-256), and their files.

Pure functions over `cryptography` objects, plus the few helpers that write them
to disk with safe permissions. Used by `scripts/gen_certs.py` and test fixtures.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from auth.errors import MaterialExists, PkiError
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, operator_subject
from comms.files import write_atomic

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=397)
DEVICE_VALIDITY = dt.timedelta(days=825)
CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate not_before so slightly slow clocks accept new certs
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
DEVICES_DIR = "devices"
OPERATORS_DIR = "operators"
PLATFORM_DIR = "_platform"

PrivateKey = ec.EllipticCurvePrivateKey
Extensions = list[tuple[x509.ExtensionType, bool]]  # (extension, critical)


@dataclass(frozen=True)
class CertifiedKey:
    """A private key and the certificate issued for it."""

    key: PrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- extensions: what makes a certificate a CA or a leaf (auth.profile checks the leaf side) ----


def key_usage(*, ca: bool, **overrides: bool) -> x509.KeyUsage:
    """digitalSignature always; keyCertSign and cRLSign for a CA only; nothing else.
    ``overrides`` (KeyUsage field names) let tests build certificates that break the profile."""
    fields = {
        "digital_signature": True,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": ca,
        "crl_sign": ca,
        "encipher_only": False,
        "decipher_only": False,
    }
    return x509.KeyUsage(**(fields | overrides))


def ca_extensions(path_length: int | None = 0) -> Extensions:
    """A CA: CA:TRUE (``path_length`` 0: it signs leaves only) and a certificate/CRL signing KeyUsage."""
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (key_usage(ca=True), True),
    ]


def leaf_extensions(*, server: bool) -> Extensions:
    """A leaf: CA:FALSE, a signing-only KeyUsage, and serverAuth or clientAuth."""
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage(ca=False), True),
        (x509.ExtendedKeyUsage([purpose]), False),
    ]


def with_extensions(builder: x509.CertificateBuilder, extensions: Extensions) -> x509.CertificateBuilder:
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder


def create_ca(common_name: str = "Audio Fleet CA", validity: dt.timedelta = CA_VALIDITY) -> CertifiedKey:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        with_extensions(x509.CertificateBuilder(), ca_extensions())
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, cert)


def issue_certificate(
    ca: CertifiedKey,
    common_name: str,
    sans: list[x509.GeneralName],
    *,
    server: bool,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: PrivateKey | None = None,
    subject: x509.Name | None = None,
) -> CertifiedKey:
    """Issue a leaf certificate. Low-level: tests use it to build odd certificates too."""
    key = key or new_key()
    now = _now()
    not_before = not_before or now - CLOCK_SKEW
    not_after = not_after or now + (SERVER_VALIDITY if server else DEVICE_VALIDITY)
    builder = (
        with_extensions(x509.CertificateBuilder(), leaf_extensions(server=server))
        .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertifiedKey(key, builder.sign(ca.key, hashes.SHA256()))


def issue_server_cert(ca: CertifiedKey, dns_names: list[str], ip_addresses: list[str]) -> CertifiedKey:
    if not dns_names and not ip_addresses:
        raise PkiError("a server certificate needs at least one --dns name or --ip address")
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for addr in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError as exc:
            raise PkiError(f"{addr!r} is not an IP address") from exc
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    return issue_certificate(ca, common_name, sans, server=True)


def issue_device_cert(
    ca: CertifiedKey, identity: Identity, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> CertifiedKey:
    uri = x509.UniformResourceIdentifier(identity.spiffe_id(trust_domain))
    return issue_certificate(ca, str(identity), [uri], server=False)


def issue_operator_cert(
    ca: CertifiedKey, operator: OperatorIdentity, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> CertifiedKey:
    """An operator's client certificate: its identity in the one URI SAN, its role signed in the subject."""
    uri = x509.UniformResourceIdentifier(operator.spiffe_id(trust_domain))
    return issue_certificate(ca, str(operator), [uri], server=False, subject=operator_subject(operator))


# --- files -----------------------------------------------------------------


def device_paths(pki_dir: Path, identity: Identity) -> tuple[Path, Path]:
    """Where a device's certificate and key live inside a PKI directory."""
    base = pki_dir / DEVICES_DIR / identity.tenant
    return base / f"{identity.device_id}.crt", base / f"{identity.device_id}.key"


def operator_paths(pki_dir: Path, operator: OperatorIdentity) -> tuple[Path, Path]:
    """``operators/<tenant>/<name>.crt|key``; platform operators under ``operators/_platform``
    (ids cannot start with '_', so that directory is never a tenant's)."""
    base = pki_dir / OPERATORS_DIR / (operator.tenant or PLATFORM_DIR)
    return base / f"{operator.name}.crt", base / f"{operator.name}.key"


def write_material(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``data`` atomically at ``mode``; an existing file is ``MaterialExists`` unless ``force``."""
    if path.exists() and not force:
        raise MaterialExists(f"{path} already exists (use --force to overwrite)")
    write_atomic(path, data, mode)


def write_certified_key(
    material: CertifiedKey, cert_path: Path, key_path: Path, *, force: bool = False
) -> None:
    """Write cert (0644) and private key (0600); refuse to overwrite unless ``force``."""
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise MaterialExists(f"{path} already exists (use --force to overwrite)")
    write_material(key_path, material.key_pem(), PRIVATE_MODE, force=True)
    write_material(cert_path, material.cert_pem(), PUBLIC_MODE, force=True)


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"missing {path}") from None
    except ValueError:
        raise PkiError(f"{path} is not a PEM certificate") from None


def load_certified_key(cert_path: Path, key_path: Path) -> CertifiedKey:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"missing {exc.filename}") from exc
    except (ValueError, TypeError) as exc:
        raise PkiError(f"cannot parse {cert_path} / {key_path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise PkiError(f"{key_path} does not match {cert_path}")
    return CertifiedKey(key, cert)


def load_ca(pki_dir: Path) -> CertifiedKey:
    return load_certified_key(pki_dir / CA_CERT, pki_dir / CA_KEY)
