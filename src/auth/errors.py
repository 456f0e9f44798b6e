"""Exceptions of the auth package. Converted to gRPC status codes only at the server boundary."""

from __future__ import annotations

from auth.reasons import Reason


class AuthError(Exception):
    """Base class for every authentication/provisioning failure."""


class InvalidIdentifier(AuthError, ValueError):
    """A tenant or device id does not match the allowed charset/length."""


class IdentityError(AuthError):
    """A certificate carries no usable device identity. ``reason`` labels metrics and logs."""

    reason: Reason = Reason.CERT_IDENTITY


class MissingIdentity(IdentityError):
    """The certificate has no URI SAN at all."""

    reason = Reason.CERT_NO_IDENTITY


class AmbiguousIdentity(IdentityError):
    """The certificate has more than one URI SAN (SPIFFE X509-SVID says reject)."""

    reason = Reason.CERT_AMBIGUOUS_IDENTITY


class MalformedIdentity(IdentityError, ValueError):
    """The URI SAN is not a valid spiffe://<td>/tenant/<t>/device/<d> id."""

    reason = Reason.CERT_MALFORMED_IDENTITY


class ForeignTrustDomain(IdentityError):
    """The SPIFFE id belongs to a trust domain this service does not serve."""

    reason = Reason.CERT_FOREIGN_TRUST_DOMAIN


class NotADevice(IdentityError):
    """An operator certificate on a device service: operators have their own API."""

    reason = Reason.CERT_NOT_A_DEVICE


class NotAnOperator(IdentityError):
    """A device certificate (or no operator identity) on the operator API."""

    reason = Reason.CERT_NOT_AN_OPERATOR


class RoleInsufficient(AuthError):
    """An operator whose role is below what the call needs."""

    reason: Reason = Reason.ROLE_INSUFFICIENT


class CertificateProfileError(IdentityError):
    """The certificate breaks the X509-SVID leaf profile devices must follow."""

    reason = Reason.CERT_PROFILE


class CertificateNotLeaf(CertificateProfileError):
    """BasicConstraints is missing or says CA:TRUE: a CA certificate is not a device."""

    reason = Reason.CERT_NOT_LEAF


class CertificateKeyUsage(CertificateProfileError):
    """KeyUsage is missing, lacks digitalSignature, or allows signing certificates or CRLs."""

    reason = Reason.CERT_KEY_USAGE


class CertificateNotIssuedByCa(CertificateProfileError):
    """Neither a CA of the configured bundle nor an issuing CA it signed signed the certificate
    (a chain deeper than leaf -> issuing CA -> bundle CA is refused here too)."""

    reason = Reason.CERT_NOT_ISSUED_BY_CA


class CertificateIssuingCa(CertificateProfileError):
    """The leaf's intermediate is not an issuing CA of this fleet: CA:TRUE with pathLen 0,
    keyCertSign, and critical name constraints that permit only this trust domain's URIs."""

    reason = Reason.CERT_ISSUING_CA


class CertificateNameConstraints(CertificateProfileError):
    """The leaf names something its issuing CA's name constraints do not permit."""

    reason = Reason.CERT_NAME_CONSTRAINTS


class PkiError(AuthError):
    """Provisioning material is missing, unreadable or inconsistent."""


class MaterialExists(PkiError, FileExistsError):
    """Refusing to overwrite existing key material without --force."""


class TokenError(AuthError):
    """A session token was refused. ``reason`` is a short stable label for metrics and logs."""

    reason: Reason = Reason.TOKEN_INVALID
    #: False: the caller must authenticate again (UNAUTHENTICATED).
    #: True: the caller is authenticated but this token is not theirs to use (PERMISSION_DENIED).
    forbidden = False


class TokenMissing(TokenError):
    reason = Reason.TOKEN_MISSING


class TokenMalformed(TokenError):
    reason = Reason.TOKEN_MALFORMED


class TokenDuplicateMember(TokenMalformed):
    """Header or payload JSON names a member twice (RFC 8725 3.1: parse strictly)."""

    reason = Reason.TOKEN_DUPLICATE_MEMBER


class TokenUnsupportedHeader(TokenMalformed):
    """A JOSE header this server does not understand (``crit``) or of the wrong type."""

    reason = Reason.TOKEN_HEADER


class TokenAmbiguous(TokenMalformed):
    """The call carries more than one ``authorization`` metadata entry."""

    reason = Reason.TOKEN_AMBIGUOUS


class TokenAlgorithmRejected(TokenError):
    reason = Reason.TOKEN_ALGORITHM


class TokenUnknownKey(TokenError):
    reason = Reason.TOKEN_UNKNOWN_KID


class TokenBadSignature(TokenError):
    reason = Reason.TOKEN_SIGNATURE


class TokenExpired(TokenError):
    reason = Reason.TOKEN_EXPIRED


class TokenNotYetValid(TokenError):
    reason = Reason.TOKEN_NOT_YET_VALID


class TokenClaimInvalid(TokenError):
    reason = Reason.TOKEN_CLAIMS


class TokenLifetime(TokenClaimInvalid):
    """``exp - iat`` is longer than this server ever issues."""

    reason = Reason.TOKEN_LIFETIME


class SessionSuperseded(TokenError):
    reason = Reason.SESSION_SUPERSEDED


class TokenIdentityMismatch(TokenError):
    reason = Reason.TOKEN_IDENTITY_MISMATCH
    forbidden = True


class TokenBindingMismatch(TokenError):
    reason = Reason.TOKEN_BINDING_MISMATCH
    forbidden = True


class CertificateRevoked(AuthError):
    reason: Reason = Reason.CERTIFICATE_REVOKED


class DeviceRevoked(CertificateRevoked):
    """The device identity is on the operator deny-list (RevokeDevice), whatever its certificate."""

    reason = Reason.DEVICE_REVOKED


class RevocationListError(PkiError):
    """A CRL cannot be used. ``reason`` labels metrics and logs."""

    reason = "unusable"


class RevocationListMissing(RevocationListError):
    reason = "missing"


class RevocationListUnreadable(RevocationListError):
    """The file cannot be read (permissions, a directory) or is not a PEM CRL."""

    reason = "unreadable"


class RevocationListUntrusted(RevocationListError):
    """Not signed by a CA of the bundle (wrong CA, tampered)."""

    reason = "signature"


class RevocationListOlder(RevocationListError):
    """Issued before the CRL in force (or the newest the fleet has seen): a rollback."""

    reason = "older"


class SigningKeyError(PkiError):
    """The token signing key directory cannot be used."""
