"""Server TLS that follows its files: new server certificate or CA bundle without a restart.

gRPC asks ``_fetch`` before every new handshake; it returns the configuration
prepared by the last successful reload (once), else None ("no change"). Live
connections keep the material they were set up with. A bad new pair (key not
matching the certificate, unreadable file) is refused and the old one kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from auth.tls import TlsMaterial, load_tls_material

log = logging.getLogger(__name__)


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
    )


class ReloadingServerTls:
    def __init__(
        self, cert: Path, key: Path, ca: Path, on_handshake: Callable[[], None] | None = None
    ) -> None:
        self.paths = [cert, key, ca]
        self._cert, self._key, self._ca = cert, key, ca
        self.material = load_tls_material(cert, key, ca)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # _fetch runs on a gRPC core thread
        self._on_handshake = on_handshake

    def credentials(self) -> grpc.ServerCredentials:
        """mTLS credentials: a client certificate signed by the (current) CA bundle is required."""
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self.material), self._fetch, require_client_authentication=True
        )

    def reload(self) -> None:
        material = load_tls_material(self._cert, self._key, self._ca)  # raises: old material stays
        with self._lock:
            self.material = material
            self._pending = _configuration(material)
        log.info("tls.reloaded", extra={"cert": str(self._cert), "ca": str(self._ca)})

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Asked by gRPC before every handshake (so it also counts them)."""
        if self._on_handshake is not None:
            self._on_handshake()
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
