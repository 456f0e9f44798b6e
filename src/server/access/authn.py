"""Who is calling, decided from the TLS peer certificate and the session token.

No gRPC plumbing here (that is the interceptor's job): given the peer
certificate PEM and the token, return a ``CallAuth`` or raise an ``AuthError``
whose class says which status code it maps to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from cryptography import x509

from auth.errors import CertificateRevoked, DeviceRevoked, MalformedIdentity, SessionSuperseded
from auth.identity import Identity
from auth.operators import OperatorIdentity
from auth.profile import DevicePath, device_path, operator_identity
from auth.tokens import Claims, certificate_thumbprint, check_binding, verify_token
from server.access.trust import TrustState
from server.errors import DEVICE_REVOKED_TEXT


class SessionFacts(Protocol):
    """All a token check needs of a device record (the store's ``DeviceRecord`` is one): which
    session is current, and whether an operator revoked the device."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def revoked(self) -> bool: ...


RecordLookup = Callable[[Identity], Awaitable[SessionFacts | None]]
T = TypeVar("T")
Profile = Callable[[x509.Certificate, Sequence[x509.Certificate], str], T]  # auth.profile's checks


@dataclass(frozen=True)
class CallAuth:
    """The verified facts about one call, handed to its handler."""

    identity: Identity
    cert_serial: int
    thumbprint: str
    claims: Claims | None = None  # None for calls authenticated by mTLS alone
    cert_expires: float = 0.0  # notAfter, wall clock
    issuer_serial: int | None = None  # the issuing CA it came through (None: the fleet CA directly)
    cert_issued: float = 0.0  # notBefore, wall clock
    public_key: object = None  # the certificate's public key (a renewal must bring a new one)

    @property
    def session_id(self) -> str | None:
        return self.claims.session_id if self.claims else None


@dataclass(frozen=True)
class OperatorAuth:
    """The verified facts about one operator call."""

    operator: OperatorIdentity
    cert_serial: int
    spiffe_id: str
    cert_expires: float = 0.0  # notAfter, wall clock (0: unknown): a console session never outlives it


class Authenticator:
    def __init__(self, trust_domain: str, trust: TrustState, current_record: RecordLookup) -> None:
        self._trust_domain = trust_domain
        self._trust = trust
        self._current_record = current_record

    def _checked(self, pem: bytes, profile: Profile[T], kind: str) -> tuple[x509.Certificate, T]:
        """The one certificate path for every caller: parse it, apply ``profile`` (leaf, issued
        directly by a CA of the bundle, the identity its kind carries), then the CRL."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise MalformedIdentity("peer certificate could not be parsed") from None
        who = profile(cert, self._trust.issuers, self._trust_domain)
        if self._trust.is_revoked(cert.serial_number):
            raise CertificateRevoked(f"{kind} certificate is revoked")
        return cert, who

    def _chain(self, pems: Sequence[bytes]) -> list[x509.Certificate]:
        try:
            return [cert for pem in pems for cert in x509.load_pem_x509_certificates(pem)]
        except ValueError:
            raise MalformedIdentity("peer certificate chain could not be parsed") from None

    def peer(self, pem: bytes, chain: Sequence[bytes] = ()) -> CallAuth:
        """Identity of a TLS-verified certificate that follows the device profile and is not revoked
        (nor is the issuing CA it came through). ``chain``: what the peer sent after its leaf."""
        sent = self._chain(chain) if chain else []

        def profile(cert: x509.Certificate, issuers: Sequence[x509.Certificate], domain: str) -> DevicePath:
            return device_path(cert, issuers, domain, sent)

        cert, path = self._checked(pem, profile, "device")
        issuer_serial = path.issuing_ca.serial_number if path.issuing_ca is not None else None
        if issuer_serial is not None and self._trust.is_revoked(issuer_serial):
            raise CertificateRevoked("the issuing CA of this device certificate is revoked")
        return CallAuth(
            path.identity,
            cert.serial_number,
            certificate_thumbprint(cert),
            cert_expires=cert.not_valid_after_utc.timestamp(),
            issuer_serial=issuer_serial,
            cert_issued=cert.not_valid_before_utc.timestamp(),
            public_key=cert.public_key(),
        )

    def operator(self, pem: bytes) -> OperatorAuth:
        """An operator certificate: the operator profile, not revoked (CRL), role as the CA signed it."""
        cert, operator = self._checked(pem, operator_identity, "operator")
        return OperatorAuth(
            operator,
            cert.serial_number,
            operator.spiffe_id(self._trust_domain),
            cert.not_valid_after_utc.timestamp(),
        )

    async def session(self, peer: CallAuth, token: str | None) -> CallAuth:
        """The token must verify, belong to this certificate, and name the device's current session;
        the device must not be on the operator deny-list."""
        claims = verify_token(token, self._trust.keys, self._trust.policy)
        check_binding(claims, peer.identity, peer.thumbprint)
        record = await self._current_record(peer.identity)
        if record is not None and record.revoked:
            raise DeviceRevoked(DEVICE_REVOKED_TEXT)
        if claims.session_id != (record.session_id if record else None):
            raise SessionSuperseded("session was superseded by a newer one: create a new session")
        return replace(peer, claims=claims)
