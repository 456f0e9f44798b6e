"""Certificate-bound session tokens (JWT, EdDSA), issued and verified by pure functions.

Claims: ``iss``, ``aud``, ``sub`` (device), ``tid`` (tenant), ``sid``
(session), ``iat``, ``nbf``, ``exp``, ``jti`` and ``cnf: {"x5t#S256": ...}``
(RFC 8705): the SHA-256 thumbprint of the client certificate the token was
issued to, so a stolen token is useless without the device's private key.

Verification rejects everything but EdDSA (``none`` and HS* included), looks
the key up by ``kid`` in our own key ring (never ``jku``/``x5u``/``jwk``),
requires every claim, and checks audience, issuer and times with a leeway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.errors import (
    TokenAlgorithmRejected,
    TokenAmbiguous,
    TokenBadSignature,
    TokenBindingMismatch,
    TokenClaimInvalid,
    TokenDuplicateMember,
    TokenError,
    TokenExpired,
    TokenIdentityMismatch,
    TokenLifetime,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    TokenUnknownKey,
    TokenUnsupportedHeader,
)
from auth.identity import Identity, validate_id
from auth.keys import KeyRing
from comms.audio_format import FRAME_DURATIONS_MS, FRAME_MS

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "tid", "sid", "iat", "nbf", "exp", "jti", "cnf")
THUMBPRINT_CLAIM = "x5t#S256"
FRAME_CLAIM = "fms"  # optional: the session's audio packet duration (absent: 20 ms)
BEARER = "bearer "
MAX_TOKEN_LENGTH = 4096
JWS_PARTS = 3  # header.payload.signature (compact serialisation)
INTEGER_CLAIMS = ("exp", "nbf", "iat")  # NumericDate, but we only ever issue whole seconds
STRING_CLAIMS = ("sub", "tid", "sid", "jti", "iss")


def certificate_thumbprint(cert: x509.Certificate) -> str:
    """RFC 8705 ``x5t#S256``: base64url (no padding) of SHA-256 over the certificate's DER."""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str
    audience: str
    ttl_s: int
    leeway_s: int
    refresh_fraction: float = 2 / 3  # refresh_after = iat + ttl * fraction


@dataclass(frozen=True)
class IssuedToken:
    token: str
    session_id: str
    expires_at: int
    refresh_after: int


@dataclass(frozen=True)
class Claims:
    identity: Identity
    session_id: str
    thumbprint: str
    expires_at: int
    token_id: str
    frame_ms: int = FRAME_MS  # audio packet duration chosen at CreateSession (claim "fms")


def issue_token(
    keys: KeyRing,
    policy: TokenPolicy,
    identity: Identity,
    session_id: str,
    thumbprint: str,
    now: float | None = None,
    frame_ms: int = FRAME_MS,
) -> IssuedToken:
    now_s = int(time.time() if now is None else now)
    expires = now_s + policy.ttl_s
    claims = {
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": identity.device_id,
        "tid": identity.tenant,
        "sid": session_id,
        "iat": now_s,
        "nbf": now_s,
        "exp": expires,
        "jti": secrets.token_hex(12),
        "cnf": {THUMBPRINT_CLAIM: thumbprint},
        FRAME_CLAIM: frame_ms,
    }
    key = keys.current
    token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
    return IssuedToken(token, session_id, expires, now_s + int(policy.ttl_s * policy.refresh_fraction))


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of the one ``authorization: Bearer <jwt>`` entry, if any; two entries are refused."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise TokenAmbiguous("the call carries more than one authorization metadata entry")
    value = values[0]
    if not isinstance(value, str) or not value.lower().startswith(BEARER):
        raise TokenMalformed("authorization metadata is not 'Bearer <token>'")
    return value[len(BEARER) :].strip()


def verify_token(token: str | None, keys: KeyRing, policy: TokenPolicy) -> Claims:
    """Signature, algorithm, key, times (wall clock), lifetime and claims. Binding: ``check_binding``.

    Total: whatever the token holds, the only exceptions are ``TokenError`` subclasses
    with fixed messages (no library text reaches the caller).
    """
    if not token:
        raise TokenMissing("a session token is required: authorization: Bearer <token> from CreateSession")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenMalformed("session token is too long")
    try:
        return _verify(token, keys, policy)
    except TokenError:
        raise
    except Exception:  # any other shape of garbage: refused the same way, never a traceback
        raise TokenMalformed("session token is malformed") from None


def _verify(token: str, keys: KeyRing, policy: TokenPolicy) -> Claims:
    header, body = _strict_parts(token)
    public = keys.public_key(header["kid"])
    if public is None:
        raise TokenUnknownKey("token signing key is unknown (rotated out or foreign)")
    _check_claim_types(body)
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("session token expired: refresh it or create a new session") from None
    except jwt.ImmatureSignatureError:
        raise TokenNotYetValid("session token is not valid yet (check the device clock)") from None
    except jwt.InvalidSignatureError:
        raise TokenBadSignature("session token signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        claim = exc.claim if exc.claim in REQUIRED_CLAIMS else "a required"
        raise TokenClaimInvalid(f"session token lacks the {claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise TokenClaimInvalid("session token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenClaimInvalid("session token is from another issuer") from None
    except jwt.PyJWTError:
        raise TokenMalformed("session token is malformed") from None
    if payload["exp"] - payload["iat"] > policy.ttl_s + policy.leeway_s:
        raise TokenLifetime("session token lives longer than this server issues tokens for")
    return _claims(payload)


def _strict_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse header and payload strictly before PyJWT does (RFC 8725): what it tolerates, we refuse."""
    parts = token.split(".")
    if len(parts) != JWS_PARTS:
        raise TokenMalformed("session token is not a JWT")
    header = _strict_json(parts[0])
    body = _strict_json(parts[1])
    if header.get("alg") != ALGORITHM:
        raise TokenAlgorithmRejected(f"token algorithm {str(header.get('alg'))[:16]!r} is not accepted")
    if "crit" in header:  # RFC 7515 4.1.11: we understand no extension, so any crit is refused
        raise TokenUnsupportedHeader("session token names critical header extensions we do not support")
    if not isinstance(header.get("kid"), str):
        raise TokenUnsupportedHeader("session token header has no string 'kid'")
    return header, body


def _check_claim_types(body: dict[str, Any]) -> None:
    """Every registered claim present has its JSON type, checked on the raw payload.

    Why before PyJWT: it coerces (a numeric string ``exp`` passes, a float ``iat`` too), so
    checking its output would make the refusal depend on arithmetic failing by accident.
    Absent claims are left to PyJWT's ``require`` (its own "lacks the claim" refusal).
    """
    for name in INTEGER_CLAIMS:  # bool is an int subclass in Python: refused by the exact type
        if name in body and type(body[name]) is not int:
            raise TokenClaimInvalid(f"session token claim {name!r} is not an integer")
    for name in STRING_CLAIMS:
        if name in body and not isinstance(body[name], str):
            raise TokenClaimInvalid(f"session token claim {name!r} is not a string")
    aud = body.get("aud", "")
    if not isinstance(aud, str) and not (isinstance(aud, list) and all(isinstance(a, str) for a in aud)):
        raise TokenClaimInvalid("session token claim 'aud' is not a string or a list of strings")
    if "cnf" in body and not (
        isinstance(body["cnf"], dict) and isinstance(body["cnf"].get(THUMBPRINT_CLAIM), str)
    ):
        raise TokenClaimInvalid("session token has no certificate binding (cnf.x5t#S256)")


def _strict_json(segment: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
        value = json.loads(raw, object_pairs_hook=_unique_members)
    except _DuplicateMember:
        raise TokenDuplicateMember("session token JSON names a member twice") from None
    except (ValueError, RecursionError):
        raise TokenMalformed("session token is not a JWT") from None
    if not isinstance(value, dict):
        raise TokenMalformed("session token is not a JWT")
    return value


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


def _claims(payload: dict[str, Any]) -> Claims:
    cnf = payload.get("cnf")
    thumbprint = cnf.get(THUMBPRINT_CLAIM) if isinstance(cnf, dict) else None
    if not isinstance(thumbprint, str):
        raise TokenClaimInvalid("session token has no certificate binding (cnf.x5t#S256)")
    try:
        identity = Identity(
            validate_id(str(payload["tid"]), "tenant"), validate_id(str(payload["sub"]), "device")
        )
    except ValueError:
        raise TokenClaimInvalid("session token names an invalid tenant or device") from None
    sid = payload["sid"]
    if not isinstance(sid, str) or not sid:
        raise TokenClaimInvalid("session token has an invalid session id")
    frame_ms = payload.get(FRAME_CLAIM, FRAME_MS)
    if frame_ms not in FRAME_DURATIONS_MS or isinstance(frame_ms, bool):
        raise TokenClaimInvalid("session token names an unknown audio packet duration")
    return Claims(identity, sid, thumbprint, int(payload["exp"]), str(payload["jti"]), int(frame_ms))


def check_binding(claims: Claims, identity: Identity, thumbprint: str) -> None:
    """The token must belong to the presented certificate: same tenant, device and thumbprint."""
    if claims.identity != identity:
        raise TokenIdentityMismatch("session token belongs to another device")
    if not hmac.compare_digest(claims.thumbprint, thumbprint):
        raise TokenBindingMismatch("session token is bound to another certificate")
