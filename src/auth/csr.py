"""Certificate signing requests from devices: what of them is used, and what is checked.

Only the public key is used. At enrolment the CSR's subject, SANs and extensions are ignored: the
identity of the certificate comes from the enrolment code's record, never from what the device
asks. At renewal the identity is the authenticated peer's; a CSR that asks for any other name
(a SAN other than the device's own URI) is refused rather than ignored, and so is one that
reuses the current certificate's key (a renewal is a new key).
The CSR must parse (DER or PEM, at most ``MAX_CSR_BYTES``), be signed by its own key (proof
that the device holds it) and carry an EC P-256 key. Every refusal says so in our words.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.errors import AuthError

MAX_CSR_BYTES = 4096  # a P-256 CSR is a few hundred bytes


class CsrRejected(AuthError, ValueError):
    """The CSR cannot be used; the message says why (no library text)."""


class CsrForeignName(CsrRejected):
    """A renewal CSR asks for a name that is not the renewing device's."""


class CsrKeyReused(CsrRejected):
    """A renewal CSR carries the current certificate's key instead of a new one."""


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def renewal_public_key(data: bytes, own_uri: str, current_key: object) -> ec.EllipticCurvePublicKey:
    """The CSR's new key for a renewal of the device whose SPIFFE URI is ``own_uri``: checked as
    at enrolment, it may name no one else, and it must not be ``current_key``."""
    csr = _parsed(data)
    key = _checked_key(csr)
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    except Exception:  # a duplicated or malformed extension
        raise CsrRejected("CSR extensions could not be read") from None
    if sans is not None:
        others = [
            str(getattr(name, "value", name))
            for name in sans
            if name != x509.UniformResourceIdentifier(own_uri)
        ]
        if others:
            raise CsrForeignName(
                f"CSR asks for {others[0][:120]!r}: a renewal keeps this device's identity ({own_uri})"
            )
    if isinstance(current_key, ec.EllipticCurvePublicKey) and _spki(current_key) == _spki(key):
        raise CsrKeyReused("CSR reuses the current certificate's key: a renewal needs a new key")
    return key


def device_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, once it parses, its signature holds and it is EC P-256."""
    return _checked_key(_parsed(data))


def _parsed(data: bytes) -> x509.CertificateSigningRequest:
    if not data:
        raise CsrRejected("no CSR in the request")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(f"CSR is {len(data)} bytes; at most {MAX_CSR_BYTES}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except (ValueError, TypeError):
        raise CsrRejected("CSR is not a PKCS#10 certificate signing request") from None
    return csr


def _checked_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    try:
        key = csr.public_key()
        signed = csr.is_signature_valid
    except (ValueError, TypeError):
        raise CsrRejected("CSR is not a PKCS#10 certificate signing request") from None
    except Exception:  # an unsupported algorithm and the like, raised while reading the CSR
        raise CsrRejected("CSR uses a key or signature this server does not accept") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CsrRejected("CSR key must be EC P-256")
    if not signed:
        raise CsrRejected("CSR signature does not verify with its own key")
    return key
