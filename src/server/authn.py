"""Who is calling, decided from the TLS peer certificate and the session token.

No gRPC plumbing here (that is the interceptor's job): given the peer
certificate PEM and the token, return a ``CallAuth`` or raise an ``AuthError``
whose class says which status code it maps to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509

from auth.errors import CertificateRevoked, MalformedIdentity, SessionSuperseded
from auth.identity import Identity
from auth.profile import device_identity
from auth.tokens import Claims, certificate_thumbprint, check_binding, verify_token
from server.trust import TrustState

SessionLookup = Callable[[Identity], Awaitable[str | None]]


@dataclass(frozen=True)
class CallAuth:
    """The verified facts about one call, handed to its handler."""

    identity: Identity
    cert_serial: int
    thumbprint: str
    claims: Claims | None = None  # None for calls authenticated by mTLS alone

    @property
    def session_id(self) -> str | None:
        return self.claims.session_id if self.claims else None


class Authenticator:
    def __init__(self, trust_domain: str, trust: TrustState, current_session: SessionLookup) -> None:
        self._trust_domain = trust_domain
        self._trust = trust
        self._current_session = current_session

    def peer(self, pem: bytes) -> CallAuth:
        """Identity of a TLS-verified certificate that follows the device profile and is not revoked."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise MalformedIdentity("peer certificate could not be parsed") from None
        identity = device_identity(cert, self._trust.issuers, self._trust_domain)
        if self._trust.is_revoked(cert.serial_number):
            raise CertificateRevoked("device certificate is revoked")
        return CallAuth(identity, cert.serial_number, certificate_thumbprint(cert))

    async def session(self, peer: CallAuth, token: str | None) -> CallAuth:
        """The token must verify, belong to this certificate, and name the device's current session."""
        claims = verify_token(token, self._trust.keys, self._trust.policy)
        check_binding(claims, peer.identity, peer.thumbprint)
        if claims.session_id != await self._current_session(peer.identity):
            raise SessionSuperseded("session was superseded by a newer one: create a new session")
        return CallAuth(peer.identity, peer.cert_serial, peer.thumbprint, claims)
