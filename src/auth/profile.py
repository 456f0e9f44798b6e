"""The certificate profile every device (and server) certificate must follow.

gRPC's TLS accepts any chain that ends at the configured CA, so a certificate
the CA once signed with ``CA:TRUE`` could mint leaves for any tenant. The
application therefore also requires, like the SPIFFE X509-SVID profile:

* issued **directly** by a CA certificate of the configured bundle;
* ``BasicConstraints`` present with ``CA:FALSE``;
* ``KeyUsage`` present, with ``digitalSignature`` and without
  ``keyCertSign`` / ``cRLSign``;
* (devices) exactly one URI SAN, checked by ``identity_from_certificate``.

Pure functions; ``scripts/gen_certs.py`` output is tested against them.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def check_issued_by(cert: x509.Certificate, issuers: Sequence[x509.Certificate]) -> x509.Certificate:
    """The CA of ``issuers`` whose key signed ``cert``; intermediates do not count."""
    for issuer in issuers:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return issuer
    raise CertificateNotIssuedByCa("certificate was not issued directly by a trusted fleet CA")


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


def device_identity(
    cert: x509.Certificate, issuers: Sequence[x509.Certificate], trust_domain: str
) -> Identity:
    """The whole device profile: leaf, issued directly by the fleet CA, one SPIFFE URI SAN."""
    check_leaf(cert)
    check_issued_by(cert, issuers)
    try:
        return identity_from_certificate(cert, trust_domain)
    except MalformedIdentity:
        if any(is_operator_path(uri) for uri in _uris(cert)):
            raise NotADevice("an operator certificate cannot call the device services") from None
        raise
