"""Certificate signing requests from devices: what of them is used, and what is checked.

Only the public key is used. The CSR's subject, SANs and extensions are ignored: the identity
of the certificate comes from the enrolment code's record, never from what the device asks.
The CSR must parse (DER or PEM, at most ``MAX_CSR_BYTES``), be signed by its own key (proof
that the device holds it) and carry an EC P-256 key. Every refusal says so in our words.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from auth.errors import AuthError

MAX_CSR_BYTES = 4096  # a P-256 CSR is a few hundred bytes


class CsrRejected(AuthError, ValueError):
    """The CSR cannot be used; the message says why (no library text)."""


def device_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, once it parses, its signature holds and it is EC P-256."""
    if not data:
        raise CsrRejected("no CSR in the request")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(f"CSR is {len(data)} bytes; at most {MAX_CSR_BYTES}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
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
