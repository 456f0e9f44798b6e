"""Exceptions of the auth package. Converted to gRPC status codes only at the server boundary."""

from __future__ import annotations


class AuthError(Exception):
    """Base class for every authentication/provisioning failure."""


class InvalidIdentifier(AuthError, ValueError):
    """A tenant or device id does not match the allowed charset/length."""


class IdentityError(AuthError):
    """A certificate carries no usable device identity."""


class MissingIdentity(IdentityError):
    """The certificate has no URI SAN at all."""


class AmbiguousIdentity(IdentityError):
    """The certificate has more than one URI SAN (SPIFFE X509-SVID says reject)."""


class MalformedIdentity(IdentityError, ValueError):
    """The URI SAN is not a valid spiffe://<td>/tenant/<t>/device/<d> id."""


class ForeignTrustDomain(IdentityError):
    """The SPIFFE id belongs to a trust domain this service does not serve."""


class PkiError(AuthError):
    """Provisioning material is missing, unreadable or inconsistent."""


class MaterialExists(PkiError, FileExistsError):
    """Refusing to overwrite existing key material without --force."""
