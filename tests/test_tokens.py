"""Token issue/verify as pure functions (the end-to-end attack table is in test_security)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from auth import errors
from auth.identity import Identity
from auth.keys import create_signing_key, load_keyring
from auth.tokens import (
    TokenPolicy,
    bearer_token,
    check_binding,
    issue_token,
    verify_token,
)

POLICY = TokenPolicy("iss", "aud", ttl_s=900, leeway_s=30)
DEVICE = Identity("acme", "dev-1")


def test_round_trip_and_binding(tmp_path: Path) -> None:
    create_signing_key(tmp_path)
    ring = load_keyring(tmp_path)
    issued = issue_token(ring, POLICY, DEVICE, "sid1", "thumb")
    claims = verify_token(issued.token, ring, POLICY)
    assert (claims.identity, claims.session_id, claims.thumbprint) == (DEVICE, "sid1", "thumb")
    check_binding(claims, DEVICE, "thumb")
    with pytest.raises(errors.TokenIdentityMismatch):
        check_binding(claims, Identity("globex", "dev-1"), "thumb")
    with pytest.raises(errors.TokenBindingMismatch):
        check_binding(claims, DEVICE, "other")
    assert issued.expires_at - issued.refresh_after == 300  # refresh after two thirds of the lifetime


def test_leeway_accepts_small_skew(tmp_path: Path) -> None:
    create_signing_key(tmp_path)
    ring = load_keyring(tmp_path)
    early = issue_token(ring, POLICY, DEVICE, "s", "t", now=time.time() + 20)  # device clock 20 s ahead
    verify_token(early.token, ring, POLICY)
    late = issue_token(ring, POLICY, DEVICE, "s", "t", now=time.time() - 900 - 20)  # expired 20 s ago
    verify_token(late.token, ring, POLICY)
    expired = issue_token(ring, POLICY, DEVICE, "s", "t", now=time.time() - 900 - 60)
    with pytest.raises(errors.TokenExpired):
        verify_token(expired.token, ring, POLICY)


def test_bad_claim_values(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    ring = load_keyring(tmp_path)
    now = int(time.time())
    base = {
        "iss": "iss",
        "aud": "aud",
        "sub": "dev-1",
        "tid": "acme",
        "sid": "s",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j",
        "cnf": {"x5t#S256": "t"},
    }
    for change in ({"tid": "ACME"}, {"sub": "../x"}, {"sid": ""}, {"cnf": "t"}, {"cnf": {}}):
        token = jwt.encode({**base, **change}, key.private, algorithm="EdDSA", headers={"kid": key.kid})
        with pytest.raises(errors.TokenClaimInvalid):
            verify_token(token, ring, POLICY)


def wrong_types(NOW: int) -> dict[str, dict[str, object]]:
    """One registered claim of the wrong JSON type per case; everything else valid at ``NOW``."""
    return {
        "exp numeric string": {"exp": str(NOW + 60)},
        "exp float": {"exp": NOW + 60.5},
        "exp bool": {"exp": True},
        "nbf numeric string": {"nbf": str(NOW)},
        "nbf float": {"nbf": NOW - 0.5},
        "nbf bool": {"nbf": True},
        "iat numeric string": {"iat": str(NOW)},
        "iat float": {"iat": NOW - 0.5},
        "iat bool": {"iat": True},
        "sub number": {"sub": 1},
        "tid list": {"tid": ["acme"]},
        "sid number": {"sid": 7},
        "jti number": {"jti": 7},
        "iss list": {"iss": ["iss"]},
        "aud number": {"aud": 1},
        "aud list with a number": {"aud": ["aud", 1]},
        "cnf list": {"cnf": ["t"]},
        "cnf thumbprint number": {"cnf": {"x5t#S256": 1}},
    }


@pytest.mark.parametrize("case", list(wrong_types(0)))
def test_each_claim_of_the_wrong_type_is_refused_as_token_claims(tmp_path: Path, case: str) -> None:
    """PyJWT coerces (a numeric string exp passes it): the types are ours to check, one by one."""
    key = create_signing_key(tmp_path)
    ring = load_keyring(tmp_path)
    NOW = int(time.time())
    base = {"iss": "iss", "aud": ["aud"], "sub": "dev-1", "tid": "acme", "sid": "s", "iat": NOW,
            "nbf": NOW, "exp": NOW + 60, "jti": "j", "cnf": {"x5t#S256": "t"}}  # fmt: skip
    verify_token(jwt.encode(base, key.private, algorithm="EdDSA", headers={"kid": key.kid}), ring, POLICY)
    payload = json.dumps({**base, **wrong_types(NOW)[case]}).encode()  # PyJWT's encode would refuse some
    token = jwt.api_jws.PyJWS().encode(payload, key.private, algorithm="EdDSA", headers={"kid": key.kid})
    with pytest.raises(errors.TokenClaimInvalid) as info:
        verify_token(token, ring, POLICY)
    assert info.value.reason == "token_claims"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), None),
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer  abc "),), "abc"),
        ((("x", "y"),), None),
    ],
)
def test_bearer_token(metadata: tuple[tuple[str, str], ...], expected: str | None) -> None:
    assert bearer_token(metadata) == expected


def test_bearer_token_rejects_other_schemes() -> None:
    with pytest.raises(errors.TokenMalformed):
        bearer_token((("authorization", "Basic dXNlcjpwYXNz"),))


def test_keyring_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.SigningKeyError, match="not found"):
        load_keyring(tmp_path / "missing")
    with pytest.raises(errors.SigningKeyError, match="no signing key"):
        load_keyring(tmp_path)
    (tmp_path / "nonsense.key").write_text("x")
    with pytest.raises(errors.SigningKeyError, match="not a key id"):
        load_keyring(tmp_path)
