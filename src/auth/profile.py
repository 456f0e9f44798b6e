"""The certificate profile every device (and server) certificate must follow.

gRPC's TLS accepts any chain that ends at the configured CA, so a certificate
the CA once signed with ``CA:TRUE`` could mint leaves for any tenant. The
application therefore also requires, like the SPIFFE X509-SVID profile:

* issued **directly** by a CA certificate of the configured bundle, or (devices only) by an
  issuing CA that such a CA signed directly (``auth.issuing_ca``: CA:TRUE pathLen 0,
  keyCertSign, name constraints for this trust domain, honoured by the leaf): leaf -> issuing
  CA -> bundle CA and nothing deeper. Operators are never issued by an issuing CA: the server
  holds that key, and it must not be able to mint operator roles;
* ``BasicConstraints`` present with ``CA:FALSE``;
* ``KeyUsage`` present, with ``digitalSignature`` and without
  ``keyCertSign`` / ``cRLSign``;
* (devices) exactly one URI SAN, checked by ``identity_from_certificate``.

Pure functions; ``scripts/gen_certs.py`` output is tested against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from auth.errors import (
    CertificateKeyUsage,
    CertificateNotIssuedByCa,
    CertificateNotLeaf,
    MalformedIdentity,
    NotADevice,
    NotAnOperator,
)
from auth.identity import Identity, identity_from_certificate
from auth.issuing_ca import check_issued_within, check_issuing_ca
from auth.operators import OperatorIdentity, is_operator_path, operator_from_certificate


def check_leaf(cert: x509.Certificate) -> None:
    """BasicConstraints CA:FALSE and a signing-only KeyUsage, or a ``CertificateProfileError``."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateNotLeaf("certificate has no BasicConstraints (must be CA:FALSE)") from None
    if constraints.ca:
        raise CertificateNotLeaf("certificate is a CA certificate (CA:TRUE), not a device leaf")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateKeyUsage("certificate has no KeyUsage (must allow digitalSignature)") from None
    if not usage.digital_signature:
        raise CertificateKeyUsage("certificate KeyUsage lacks digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise CertificateKeyUsage("certificate KeyUsage allows signing certificates or CRLs")


def _signer(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for issuer in candidates:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return issuer
    return None


def check_issued_by(cert: x509.Certificate, issuers: Sequence[x509.Certificate]) -> x509.Certificate:
    """The CA of ``issuers`` whose key signed ``cert``; intermediates do not count."""
    issuer = _signer(cert, issuers)
    if issuer is None:
        raise CertificateNotIssuedByCa("certificate was not issued directly by a trusted fleet CA")
    return issuer


def check_chain(
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    issuers: Sequence[x509.Certificate],
    trust_domain: str,
) -> x509.Certificate | None:
    """Issued by a CA of ``issuers`` (None), or by an issuing CA among ``chain`` (the
    certificates the peer sent after its leaf) that one of them signed: that issuing CA, checked
    against its profile, with the leaf inside its name constraints. Anything deeper is refused."""
    if _signer(cert, issuers) is not None:
        return None
    issuing = _signer(cert, [ca for ca in chain if ca != cert])
    if issuing is None:
        raise CertificateNotIssuedByCa(
            "certificate was not issued by a trusted fleet CA nor by an issuing CA of one in its chain"
        )
    if _signer(issuing, issuers) is None:
        raise CertificateNotIssuedByCa(
            "certificate's issuing CA was not issued directly by a trusted fleet CA "
            "(chains are at most leaf -> issuing CA -> fleet CA)"
        )
    check_issued_within(cert, check_issuing_ca(issuing, trust_domain))
    return issuing


def operator_identity(
    cert: x509.Certificate, issuers: Sequence[x509.Certificate], trust_domain: str
) -> OperatorIdentity:
    """The operator profile: the same leaf rules, and an operator SPIFFE id with a signed role."""
    check_leaf(cert)
    check_issued_by(cert, issuers)
    uris = _uris(cert)
    if uris and not any(is_operator_path(uri) for uri in uris):
        raise NotAnOperator("a device certificate cannot call the operator API")
    return operator_from_certificate(cert, trust_domain)


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


@dataclass(frozen=True)
class DevicePath:
    """A device certificate that follows the profile: who, and the issuing CA it came through
    (None: issued by a bundle CA directly). Revoking that CA revokes the device too."""

    identity: Identity
    issuing_ca: x509.Certificate | None = None


def device_path(
    cert: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    trust_domain: str,
    chain: Sequence[x509.Certificate] = (),
) -> DevicePath:
    """The whole device profile: leaf, issued by the fleet CA or its issuing CA, one SPIFFE URI SAN."""
    check_leaf(cert)
    issuing = check_chain(cert, chain, issuers, trust_domain)
    try:
        return DevicePath(identity_from_certificate(cert, trust_domain), issuing)
    except MalformedIdentity:
        if any(is_operator_path(uri) for uri in _uris(cert)):
            raise NotADevice("an operator certificate cannot call the device services") from None
        raise


def device_identity(
    cert: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    trust_domain: str,
    chain: Sequence[x509.Certificate] = (),
) -> Identity:
    """``device_path``'s identity."""
    return device_path(cert, issuers, trust_domain, chain).identity
