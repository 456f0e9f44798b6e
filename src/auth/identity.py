"""Device identity: (tenant, device) carried in a certificate's SPIFFE URI SAN.

The identity is derived only from a certificate the TLS layer has verified;
never from metadata or message fields a client chooses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from auth.errors import (
    AmbiguousIdentity,
    ForeignTrustDomain,
    InvalidIdentifier,
    MalformedIdentity,
    MissingIdentity,
)

DEFAULT_TRUST_DOMAIN = "audio.example.internal"
MAX_ID_LENGTH = 64
# Lower-case letters, digits, '-' and '_'; starts with a letter or digit. Safe in
# URIs, file names, log lines and Kubernetes object names.
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TRUST_DOMAIN_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$")
_SPIFFE_PATH = re.compile(r"^/tenant/(?P<tenant>[^/]+)/device/(?P<device>[^/]+)$")


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid tenant/device id, else raise InvalidIdentifier."""
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidIdentifier(f"{what} must be 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidIdentifier(
            f"{what} {value!r} is invalid: use lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return value


def validate_trust_domain(value: str) -> str:
    if not _TRUST_DOMAIN_PATTERN.fullmatch(value):
        raise InvalidIdentifier(f"trust domain {value!r} is not a valid lower-case DNS-like name")
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a device is: equal device ids in two tenants are two devices."""

    tenant: str
    device_id: str

    def __post_init__(self) -> None:
        validate_id(self.tenant, "tenant")
        validate_id(self.device_id, "device")

    def spiffe_id(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
        return f"spiffe://{trust_domain}/tenant/{self.tenant}/device/{self.device_id}"

    def __str__(self) -> str:
        return f"{self.tenant}/{self.device_id}"


def parse_spiffe_id(uri: str, trust_domain: str) -> Identity:
    """Parse ``spiffe://<trust_domain>/tenant/<t>/device/<d>`` strictly."""
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise MalformedIdentity("identity URI is not a spiffe:// id")
    domain, sep, path = uri[len(prefix) :].partition("/")
    if not sep:
        raise MalformedIdentity("spiffe id has no path")
    if domain != trust_domain:
        raise ForeignTrustDomain(f"spiffe id is from trust domain {domain!r}, not {trust_domain!r}")
    match = _SPIFFE_PATH.fullmatch("/" + path)
    if not match:
        raise MalformedIdentity("spiffe id path is not /tenant/<tenant>/device/<device>")
    try:
        return Identity(match["tenant"], match["device"])
    except InvalidIdentifier as exc:
        raise MalformedIdentity(str(exc)) from exc


def identity_from_certificate(cert: x509.Certificate, trust_domain: str) -> Identity:
    """Derive the identity from the certificate's single URI SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise MissingIdentity("client certificate has no subject alternative name") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise MissingIdentity("client certificate has no URI SAN with a device identity")
    if len(uris) > 1:
        raise AmbiguousIdentity("client certificate has more than one URI SAN")
    return parse_spiffe_id(uris[0], trust_domain)
