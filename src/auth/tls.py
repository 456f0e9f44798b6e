"""TLS material for gRPC: read once, checked, turned into credentials by pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from auth.errors import PkiError


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of our certificate chain, our private key and the CA bundle we trust."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def _read(path: Path, what: str, hint: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} not found: {path}{hint}") from None
    except PermissionError:
        raise PkiError(f"{what} is not readable by this user: {path} (check owner and mode)") from None
    except IsADirectoryError:
        raise PkiError(f"{what} is a directory, expected a PEM file: {path}") from None
    if not data.strip():
        raise PkiError(f"{what} is empty: {path}")
    return data


@dataclass(frozen=True)
class ParsedTls:
    """The checked material plus its parsed certificates, for callers that check more."""

    material: TlsMaterial
    leaf: x509.Certificate
    cas: list[x509.Certificate]
    chain: list[x509.Certificate]  # what the certificate file holds after the leaf (an issuing CA)


def parse_tls_files(cert: Path, key: Path, ca: Path, role: str = "", hint: str = "") -> ParsedTls:
    """Read and cross-check cert/key/CA; raise PkiError with an actionable message.

    ``role`` prefixes the messages ("device certificate ..."); ``hint`` says how to
    provision a missing file.
    """
    prefix = f"{role} " if role else ""
    cert_pem = _read(cert, f"{prefix}certificate", hint)
    key_pem = _read(key, f"{prefix}private key", hint)
    ca_pem = _read(ca, "CA bundle", hint)
    try:
        leaf, *chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise PkiError(f"{prefix}certificate is not a PEM X.509 certificate: {cert}") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(
            f"{prefix}private key is unreadable or encrypted (need unencrypted PEM): {key}"
        ) from None
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise PkiError(f"CA bundle holds no PEM certificate: {ca}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise PkiError(f"private key {key} does not match certificate {cert}")
    return ParsedTls(TlsMaterial(cert_pem, key_pem, ca_pem), leaf, cas, chain)


def load_tls_material(cert: Path, key: Path, ca: Path) -> TlsMaterial:
    """Read and cross-check cert/key/CA; raise PkiError with an actionable message."""
    return parse_tls_files(cert, key, ca).material


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """mTLS: a client certificate signed by the CA bundle is required for every connection."""
    return grpc.ssl_server_credentials(
        [(material.key_pem, material.cert_pem)],
        root_certificates=material.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """The device side: trust only the fleet CA, present the device certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem,
        private_key=material.key_pem,
        certificate_chain=material.cert_pem,
    )
