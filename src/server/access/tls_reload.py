"""Server TLS that follows its files: new server certificate or CA bundle without a restart.

Every listener follows the rotation on its own: each gRPC listener gets its own
fetcher (``credentials()``), which gRPC asks before every new handshake and
which hands each new configuration to its listener once (a fetcher shared by
two servers would give the new configuration to whichever asked first, and the
other would keep the old one for good). The HTTPS console's context
(``https_context()``) swaps the current certificate into each handshake.
Live connections keep the material they were set up with. A bad new pair (key
not matching the certificate, unreadable file) is refused and the old one kept.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from auth.tls import TlsMaterial, load_tls_material

log = logging.getLogger(__name__)

MIN_HTTPS_VERSION = ssl.TLSVersion.TLSv1_2


def _configuration(material: TlsMaterial, send_ca: bool = False) -> grpc.ServerCertificateConfiguration:
    chain = material.cert_pem + (issuer_pem(material) if send_ca else b"")
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, chain)], root_certificates=material.ca_pem
    )


def issuer_pem(material: TlsMaterial) -> bytes:
    """The CA of the bundle that issued our certificate (PEM), or b"" when none of them did.
    Sent after our certificate where a client pins the CA by its fingerprint (enrolment)."""
    leaf = x509.load_pem_x509_certificate(material.cert_pem)
    for ca in x509.load_pem_x509_certificates(material.ca_pem):
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca.public_bytes(serialization.Encoding.PEM)
    return b""


def https_context(cert: Path, key: Path) -> ssl.SSLContext:
    """HTTPS with the server's own certificate (the one devices trust), TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_HTTPS_VERSION
    context.load_cert_chain(str(cert), str(key))  # checks that the key matches
    return context


class ReloadingServerTls:
    def __init__(self, cert: Path, key: Path, ca: Path, https: bool = False) -> None:
        self.paths = [cert, key, ca]
        self._cert, self._key, self._ca = cert, key, ca
        self.material = load_tls_material(cert, key, ca)
        self.generation = 0  # goes up with every reload; each fetcher remembers what it handed out
        self._lock = threading.Lock()  # fetchers run on gRPC core threads
        self._https: ssl.SSLContext | None = https_context(cert, key) if https else None
        self._https_front: ssl.SSLContext | None = None

    def current(self) -> tuple[int, TlsMaterial]:
        with self._lock:
            return self.generation, self.material

    def credentials(
        self, on_handshake: Callable[[], None] | None = None, client_auth: bool = True
    ) -> grpc.ServerCredentials:
        """mTLS credentials for one listener: a client certificate signed by the (current) CA
        bundle is required. ``client_auth=False``: server-only TLS (enrolment: devices have no
        certificate yet), and our CA is sent after our certificate, so a device can pin it by its
        fingerprint. ``on_handshake`` is called before each handshake (counting them)."""
        fetcher = _Fetcher(self, on_handshake, send_ca=not client_auth)
        return grpc.dynamic_ssl_server_credentials(
            fetcher.initial(), fetcher, require_client_authentication=client_auth
        )

    def ca_fingerprint(self) -> str:
        """``SHA256:<hex>`` of the CA that issued our certificate: what a device enrolling pins."""
        _, material = self.current()
        pem = issuer_pem(material)
        if not pem:
            return ""
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        return "SHA256:" + hashlib.sha256(der).hexdigest()

    def https_context(self) -> ssl.SSLContext:
        """The HTTPS listener's context: each handshake is given the current certificate."""
        assert self._https is not None, "ReloadingServerTls(https=True) for an HTTPS listener"
        if self._https_front is None:
            front = https_context(self._cert, self._key)
            front.sni_callback = self._use_current  # runs for every ClientHello, SNI or not
            self._https_front = front
        return self._https_front

    def _use_current(self, connection: ssl.SSLObject, _name: str | None, context: ssl.SSLContext) -> None:
        current = self._https
        if current is not None and current is not context:
            connection.context = current

    def reload(self) -> None:
        material = load_tls_material(self._cert, self._key, self._ca)  # raises: old material stays
        https = https_context(self._cert, self._key) if self._https is not None else None
        with self._lock:
            self.material = material
            self.generation += 1
            if https is not None:
                self._https = https
        log.info(
            "tls.reloaded",
            extra={"cert": str(self._cert), "ca": str(self._ca), "generation": self.generation},
        )


class _Fetcher:
    """One listener's fetch callback: the newest configuration once, then None ("no change")."""

    def __init__(
        self, source: ReloadingServerTls, on_handshake: Callable[[], None] | None, send_ca: bool = False
    ) -> None:
        self._source = source
        self._on_handshake = on_handshake
        self._send_ca = send_ca
        self._lock = threading.Lock()
        self._generation = -1

    def initial(self) -> grpc.ServerCertificateConfiguration:
        with self._lock:
            self._generation, material = self._source.current()
        return _configuration(material, self._send_ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """Asked by gRPC before every handshake of this listener (so it also counts them)."""
        if self._on_handshake is not None:
            self._on_handshake()
        generation, material = self._source.current()
        with self._lock:
            if generation == self._generation:
                return None
            self._generation = generation
        return _configuration(material, self._send_ca)
