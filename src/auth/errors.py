"""Exceptions of the auth package. Converted to gRPC status codes only at the server boundary."""

from __future__ import annotations


class AuthError(Exception):
    """Base class for every authentication/provisioning failure."""


class InvalidIdentifier(AuthError, ValueError):
    """A tenant or device id does not match the allowed charset/length."""


class IdentityError(AuthError):
    """A certificate carries no usable device identity. ``reason`` labels metrics and logs."""

    reason = "cert_identity"


class MissingIdentity(IdentityError):
    """The certificate has no URI SAN at all."""

    reason = "cert_no_identity"


class AmbiguousIdentity(IdentityError):
    """The certificate has more than one URI SAN (SPIFFE X509-SVID says reject)."""

    reason = "cert_ambiguous_identity"


class MalformedIdentity(IdentityError, ValueError):
    """The URI SAN is not a valid spiffe://<td>/tenant/<t>/device/<d> id."""

    reason = "cert_malformed_identity"


class ForeignTrustDomain(IdentityError):
    """The SPIFFE id belongs to a trust domain this service does not serve."""

    reason = "cert_foreign_trust_domain"


class NotADevice(IdentityError):
    """An operator certificate on a device service: operators have their own API."""

    reason = "cert_not_a_device"


class NotAnOperator(IdentityError):
    """A device certificate (or no operator identity) on the operator API."""

    reason = "cert_not_an_operator"


class RoleInsufficient(AuthError):
    """An operator whose role is below what the call needs."""

    reason = "role_insufficient"


class CertificateProfileError(IdentityError):
    """The certificate breaks the X509-SVID leaf profile devices must follow."""

    reason = "cert_profile"


class CertificateNotLeaf(CertificateProfileError):
    """BasicConstraints is missing or says CA:TRUE: a CA certificate is not a device."""

    reason = "cert_not_leaf"


class CertificateKeyUsage(CertificateProfileError):
    """KeyUsage is missing, lacks digitalSignature, or allows signing certificates or CRLs."""

    reason = "cert_key_usage"


class CertificateNotIssuedByCa(CertificateProfileError):
    """The certificate was not signed directly by a CA of the configured bundle."""

    reason = "cert_not_issued_by_ca"


class PkiError(AuthError):
    """Provisioning material is missing, unreadable or inconsistent."""


class MaterialExists(PkiError, FileExistsError):
    """Refusing to overwrite existing key material without --force."""


class TokenError(AuthError):
    """A session token was refused. ``reason`` is a short stable label for metrics and logs."""

    reason = "token_invalid"
    #: False: the caller must authenticate again (UNAUTHENTICATED).
    #: True: the caller is authenticated but this token is not theirs to use (PERMISSION_DENIED).
    forbidden = False


class TokenMissing(TokenError):
    reason = "token_missing"


class TokenMalformed(TokenError):
    reason = "token_malformed"


class TokenDuplicateMember(TokenMalformed):
    """Header or payload JSON names a member twice (RFC 8725 3.1: parse strictly)."""

    reason = "token_duplicate_member"


class TokenUnsupportedHeader(TokenMalformed):
    """A JOSE header this server does not understand (``crit``) or of the wrong type."""

    reason = "token_header"


class TokenAmbiguous(TokenMalformed):
    """The call carries more than one ``authorization`` metadata entry."""

    reason = "token_ambiguous"


class TokenAlgorithmRejected(TokenError):
    reason = "token_algorithm"


class TokenUnknownKey(TokenError):
    reason = "token_unknown_kid"


class TokenBadSignature(TokenError):
    reason = "token_signature"


class TokenExpired(TokenError):
    reason = "token_expired"


class TokenNotYetValid(TokenError):
    reason = "token_not_yet_valid"


class TokenClaimInvalid(TokenError):
    reason = "token_claims"


class TokenLifetime(TokenClaimInvalid):
    """``exp - iat`` is longer than this server ever issues."""

    reason = "token_lifetime"


class SessionSuperseded(TokenError):
    reason = "session_superseded"


class TokenIdentityMismatch(TokenError):
    reason = "token_identity_mismatch"
    forbidden = True


class TokenBindingMismatch(TokenError):
    reason = "token_binding_mismatch"
    forbidden = True


class CertificateRevoked(AuthError):
    reason = "certificate_revoked"


class DeviceRevoked(CertificateRevoked):
    """The device identity is on the operator deny-list (RevokeDevice), whatever its certificate."""

    reason = "device_revoked"


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
