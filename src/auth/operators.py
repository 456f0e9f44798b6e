"""Operator identities: who may look at and command a tenant's fleet, and with which role.

An operator certificate is signed by the fleet CA like a device's, with one URI SAN:

* ``spiffe://<td>/tenant/<tenant>/operator/<name>``: an operator of one tenant;
* ``spiffe://<td>/platform/operator/<name>``: a platform operator (every tenant),
  a separate, explicit kind of identity, never a tenant called "platform".

The role (viewer < operator < admin) is what the CA signed into the certificate
(its subject's organizational unit ``role:<role>``), never anything the caller
sends. Pure functions; the server's operator API builds on them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from auth.errors import IdentityError, InvalidIdentifier, MalformedIdentity
from auth.identity import DEFAULT_TRUST_DOMAIN, validate_id
from auth.reasons import Reason

ROLE_PREFIX = "role:"
_TENANT_OPERATOR = re.compile(r"^/tenant/(?P<tenant>[^/]+)/operator/(?P<name>[^/]+)$")
_PLATFORM_OPERATOR = re.compile(r"^/platform/operator/(?P<name>[^/]+)$")


class Role(enum.IntEnum):
    """Each role may do everything the ones below it may."""

    VIEWER = 1  # list, get, watch, audit, list sounds
    OPERATOR = 2  # also mode, play, stop, disconnect, sounds
    ADMIN = 3  # also revoke and unrevoke

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InvalidIdentifier(f"role {text!r} is not one of viewer, operator, admin") from None


class OperatorCertificateError(IdentityError):
    """An operator certificate without a valid role or identity."""

    reason = Reason.CERT_OPERATOR_INVALID


@dataclass(frozen=True, slots=True)
class OperatorIdentity:
    name: str
    role: Role
    tenant: str | None  # None: a platform operator, for every tenant

    def __post_init__(self) -> None:
        validate_id(self.name, "operator")
        if self.tenant is not None:
            validate_id(self.tenant, "tenant")

    @property
    def platform(self) -> bool:
        return self.tenant is None

    def spiffe_id(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
        if self.tenant is None:
            return f"spiffe://{trust_domain}/platform/operator/{self.name}"
        return f"spiffe://{trust_domain}/tenant/{self.tenant}/operator/{self.name}"

    def may_see(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant

    def __str__(self) -> str:
        return f"{self.tenant or '*platform*'}/{self.name} ({self.role.label})"


def is_operator_path(uri: str) -> bool:
    """Whether a SPIFFE id names an operator (whatever its trust domain): never a device."""
    path = uri.split("://", 1)[-1].partition("/")[2]
    return bool(_TENANT_OPERATOR.fullmatch("/" + path) or _PLATFORM_OPERATOR.fullmatch("/" + path))


def operator_from_certificate(cert: x509.Certificate, trust_domain: str) -> OperatorIdentity:
    """The operator a certificate names, with the role its CA signed; raises ``IdentityError``."""
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        raise OperatorCertificateError("an operator certificate needs exactly one URI SAN")
    prefix = f"spiffe://{trust_domain}/"
    if not uris[0].startswith(prefix):
        raise OperatorCertificateError("operator identity is not a spiffe id of this trust domain")
    path = "/" + uris[0][len(prefix) :]
    roles = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    role_labels = [str(r)[len(ROLE_PREFIX) :] for r in roles if str(r).startswith(ROLE_PREFIX)]
    if len(role_labels) != 1:
        raise OperatorCertificateError("an operator certificate names exactly one role (OU=role:<role>)")
    try:
        role = Role.parse(role_labels[0])
        if match := _PLATFORM_OPERATOR.fullmatch(path):
            return OperatorIdentity(match["name"], role, None)
        if match := _TENANT_OPERATOR.fullmatch(path):
            return OperatorIdentity(match["name"], role, match["tenant"])
    except InvalidIdentifier as exc:
        raise MalformedIdentity(str(exc)) from None
    raise OperatorCertificateError(
        "not an operator identity: /tenant/<t>/operator/<name> or /platform/operator/<name>"
    )


def operator_subject(operator: OperatorIdentity) -> x509.Name:
    """The subject a CA signs for an operator: its name and its role."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, str(operator)),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{ROLE_PREFIX}{operator.role.label}"),
        ]
    )
