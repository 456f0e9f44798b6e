"""The issuing CA: an intermediate the offline root signs, so servers can issue device certificates
without ever holding the root's key.

What it is (and what ``check_issuing_ca`` requires of any intermediate in a device's chain):

* ``CA:TRUE`` with ``pathLen 0`` (critical): it signs leaves, never another CA, so chains are
  exactly leaf -> issuing CA -> root;
* ``keyCertSign`` and ``cRLSign``;
* critical **name constraints** that permit only URI names of this trust domain and exclude
  every DNS name and IP address. RFC 5280 URI constraints match the *host* alone, so the
  permitted subtree is ``<trust domain>``; the ``/tenant/<t>/device/<d>`` path is our own
  profile's rule (auth.identity). Excluding DNS and IP matters: without it a stolen issuing
  key could mint a *server* certificate that devices (which trust the root) would accept;
* about a year of life, never past the root's.

Its files live in a directory of their own (``<pki>/issuing/``) so they can become a Kubernetes
Secret of their own; a device certificate it issues is stored as the leaf followed by this CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth import pki
from auth.errors import CertificateIssuingCa, MaterialExists
from auth.identity import Identity
from auth.name_constraints import check_names, subject_alternative_names
from comms.files import write_atomic

ISSUING_VALIDITY = dt.timedelta(days=365)
ISSUING_DIR = "issuing"
ISSUING_CERT = "issuing-ca.crt"
ISSUING_KEY = "issuing-ca.key"
LEAF_BACKDATE_SHARE = 10  # device certificates are backdated by at most 1/10 of their lifetime
RETIRED_DIR = "retired"  # certificates of issuing CAs replaced by a rotation (their keys are gone)
#: Excluded in every issuing CA: an empty DNS base is every DNS name, /0 is every address.
EXCLUDED: tuple[x509.GeneralName, ...] = (
    x509.DNSName(""),
    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
    x509.IPAddress(ipaddress.ip_network("::/0")),
)
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def name_constraints(trust_domain: str) -> x509.NameConstraints:
    """URIs of ``trust_domain`` only (its host; paths are not constrainable), no DNS or IP names."""
    return x509.NameConstraints(
        permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
        excluded_subtrees=list(EXCLUDED),
    )


def create_issuing_ca(
    root: pki.CertifiedKey, trust_domain: str, validity: dt.timedelta = ISSUING_VALIDITY
) -> pki.CertifiedKey:
    """A new issuing CA signed by ``root`` (its own new key)."""
    key = pki.new_key()
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Audio Fleet Issuing CA {now:%Y-%m-%d} {serial:x}"[:64])]
    )
    not_after = min(now + validity, root.cert.not_valid_after_utc)
    cert = (
        pki.with_extensions(x509.CertificateBuilder(), pki.ca_extensions(path_length=0))
        .subject_name(name)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - pki.CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(name_constraints(trust_domain), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )
    return pki.CertifiedKey(key, cert)


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> x509.Extension[_Ext]:
    what = f"issuing CA {cert.subject.rfc4514_string()}"
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        raise CertificateIssuingCa(f"{what} has no {kind.__name__}") from None


def check_issuing_ca(ca: x509.Certificate, trust_domain: str) -> x509.NameConstraints:
    """The issuing-CA profile above, or ``CertificateIssuingCa``; returns its name constraints."""
    what = f"issuing CA {ca.subject.rfc4514_string()}"
    basic = _extension(ca, x509.BasicConstraints)
    if not (basic.critical and basic.value.ca and basic.value.path_length == 0):
        raise CertificateIssuingCa(f"{what} must be CA:TRUE with pathLen 0 (critical)")
    usage = _extension(ca, x509.KeyUsage).value
    if not usage.key_cert_sign:
        raise CertificateIssuingCa(f"{what} lacks keyCertSign")
    constraints = _extension(ca, x509.NameConstraints)
    if not constraints.critical:
        raise CertificateIssuingCa(f"{what} has name constraints that are not critical")
    permitted = constraints.value.permitted_subtrees or []
    if not permitted or any(
        not isinstance(tree, x509.UniformResourceIdentifier) or tree.value.lower() != trust_domain
        for tree in permitted
    ):
        raise CertificateIssuingCa(f"{what} must permit only URI names of trust domain {trust_domain}")
    excluded = constraints.value.excluded_subtrees or []
    if any(name not in excluded for name in EXCLUDED):
        raise CertificateIssuingCa(
            f"{what} does not exclude every DNS name and IP address (it could mint server certificates)"
        )
    return constraints.value


def check_issued_within(leaf: x509.Certificate, constraints: x509.NameConstraints) -> None:
    """The leaf's names against its issuing CA's constraints (``CertificateNameConstraints``)."""
    check_names(subject_alternative_names(leaf), constraints)


def issue_for_key(
    ca: pki.CertifiedKey,
    public_key: ec.EllipticCurvePublicKey,
    identity: Identity,
    trust_domain: str,
    lifetime: dt.timedelta,
) -> x509.Certificate:
    """A device certificate for a key the device made (from its CSR): the device leaf profile,
    ``identity`` in the one URI SAN, never past the issuing CA's own notAfter. Backdated for slow
    clocks, by at most a tenth of the lifetime, so that notBefore..notAfter (from which the device
    schedules its renewal) stays close to the lifetime asked for."""
    now = dt.datetime.now(dt.UTC)
    uri = x509.UniformResourceIdentifier(identity.spiffe_id(trust_domain))
    return (
        pki.with_extensions(x509.CertificateBuilder(), pki.leaf_extensions(server=False))
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(identity))]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(pki.CLOCK_SKEW, lifetime / LEAF_BACKDATE_SHARE))
        .not_valid_after(min(now + lifetime, ca.cert.not_valid_after_utc))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([uri]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def chain_pem(leaf: x509.Certificate, issuing: x509.Certificate) -> bytes:
    """What a device's certificate file holds: its certificate, then its issuing CA's."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, issuing))


# --- files -----------------------------------------------------------------


def issuing_paths(pki_dir: Path) -> tuple[Path, Path]:
    base = pki_dir / ISSUING_DIR
    return base / ISSUING_CERT, base / ISSUING_KEY


def load_issuing_ca(pki_dir: Path) -> pki.CertifiedKey:
    return pki.load_certified_key(*issuing_paths(pki_dir))


def write_issuing_ca(material: pki.CertifiedKey, pki_dir: Path, *, rotate: bool = False) -> Path | None:
    """Write the issuing CA (key 0600); with ``rotate``, first keep the current certificate in
    ``retired/`` (for the record and for revoking it later) and return where; its key is replaced."""
    cert_path, key_path = issuing_paths(pki_dir)
    retired: Path | None = None
    if cert_path.exists():
        if not rotate:
            raise MaterialExists(f"{cert_path} already exists (use --rotate to replace it)")
        old = pki.load_certificate(cert_path)
        retired = cert_path.parent / RETIRED_DIR / f"issuing-ca-{old.serial_number:x}.crt"
        retired.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert_path, retired)
    pki.write_certified_key(material, cert_path, key_path, force=True)
    return retired


def write_chain(
    leaf: pki.CertifiedKey, issuing: x509.Certificate, cert_path: Path, key_path: Path, *, force: bool
) -> None:
    """A leaf the issuing CA signed: the key (0600), and a certificate file holding leaf + CA
    (what a TLS client presents, so the server can build leaf -> issuing CA -> root)."""
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise MaterialExists(f"{path} already exists (use --force to overwrite)")
    chain = chain_pem(leaf.cert, issuing)
    write_atomic(key_path, leaf.key_pem(), pki.PRIVATE_MODE)
    write_atomic(cert_path, chain, pki.PUBLIC_MODE)
