"""X.509 name constraints (RFC 5280 4.2.1.10) for the SAN types our certificates carry.

The TLS stack (BoringSSL in gRPC) already applies an issuing CA's name constraints in the
handshake; the server checks them again itself so the rule does not rest on one library's
defaults. Only URI, DNS and IP names are evaluated. A name of another type under a CA that
constrains that type is refused (fail closed): our issuing CAs constrain only these three.

URI constraints name a *host*, never a path: ``audio.example.internal`` permits
``spiffe://audio.example.internal/<anything>``; ``.example.internal`` permits every host under
``example.internal`` but not ``example.internal`` itself. Paths (``/tenant/...``) are ours to
check (auth.identity).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from cryptography import x509

from auth.errors import CertificateNameConstraints

_EVALUATED = (x509.UniformResourceIdentifier, x509.DNSName, x509.IPAddress)


def _host_matches(host: str, base: str) -> bool:
    base = base.lower()
    if not base:  # an empty DNS base matches every name (how "no DNS names at all" is said)
        return True
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _dns_matches(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower()
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _matches(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    """Whether ``name`` falls within ``subtree`` (both of the same type)."""
    if isinstance(name, x509.UniformResourceIdentifier):
        host = urlsplit(name.value).hostname
        return host is not None and _host_matches(host, str(subtree.value))
    if isinstance(name, x509.DNSName):
        return _dns_matches(name.value, str(subtree.value))
    if isinstance(name, x509.IPAddress) and isinstance(
        subtree.value, ipaddress.IPv4Network | ipaddress.IPv6Network
    ):
        address = name.value
        if isinstance(address, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return False  # a SAN is an address, never a range
        return address.version == subtree.value.version and address in subtree.value
    return False


def _of_type(subtrees: Sequence[x509.GeneralName] | None, kind: type) -> list[x509.GeneralName]:
    return [tree for tree in subtrees or () if isinstance(tree, kind)]


def check_names(names: Sequence[x509.GeneralName], constraints: x509.NameConstraints) -> None:
    """Every name must be permitted (when the CA permits names of its type) and not excluded."""
    for name in names:
        kind = type(name)
        permitted = _of_type(constraints.permitted_subtrees, kind)
        excluded = _of_type(constraints.excluded_subtrees, kind)
        if not isinstance(name, _EVALUATED):
            if permitted or excluded:
                raise CertificateNameConstraints(
                    f"certificate names a {kind.__name__} its issuing CA constrains; only URI, DNS "
                    "and IP names are evaluated"
                )
            continue
        if permitted and not any(_matches(name, tree) for tree in permitted):
            raise CertificateNameConstraints(
                f"certificate name {name.value} is outside its issuing CA's permitted names"
            )
        if any(_matches(name, tree) for tree in excluded):
            raise CertificateNameConstraints(f"certificate name {name.value} is excluded by its issuing CA")


def subject_alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
