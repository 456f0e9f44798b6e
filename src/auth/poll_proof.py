"""Proof that the caller of ``EnrollmentService.Poll`` holds the key its claim's CSR carried.

A pending request's certificate must go only to the device that asked for it. The request id is
no secret (operators see it), so the device signs it: ECDSA P-256 with SHA-256 over
``POLL_CONTEXT + request_id``, with the private key whose public half was in the CSR. The
context string keeps the signature from meaning anything anywhere else. Shared by the device
(``sign``) and the server (``verifies``); the key's fingerprint is what both sides show a person.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

POLL_CONTEXT = b"audio.enroll.v1.Poll\n"
MAX_SIGNATURE_BYTES = 80  # a DER ECDSA P-256 signature is at most 72 bytes


def message(request_id: str) -> bytes:
    return POLL_CONTEXT + request_id.encode()


def sign(key: ec.EllipticCurvePrivateKey, request_id: str) -> bytes:
    return key.sign(message(request_id), ec.ECDSA(hashes.SHA256()))


def public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``SHA256:<hex>`` of the key's SubjectPublicKeyInfo (DER): what a person compares."""
    return "SHA256:" + hashlib.sha256(public_der(key)).hexdigest()


def verifies(public_key_der: bytes, request_id: str, signature: bytes) -> bool:
    """Whether ``signature`` is the holder of ``public_key_der`` signing ``request_id``."""
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        return False
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message(request_id), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
