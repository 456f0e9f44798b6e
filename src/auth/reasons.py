"""Every refusal reason counted in ``audio_auth_failures_total`` (and audited), as one set.

Why one enumeration: a reason is a promise that some rule refuses some input. tests/
test_refusal_reasons.py fails when a member has no test that triggers it alone (everything
else valid) and asserts it, so a rule cannot silently lose its only test again (issue 23).
"""

# ruff: noqa: S105  (labels named token_*, not secrets)
from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    CERT_IDENTITY = "cert_identity"
    CERT_NO_IDENTITY = "cert_no_identity"
    CERT_AMBIGUOUS_IDENTITY = "cert_ambiguous_identity"
    CERT_MALFORMED_IDENTITY = "cert_malformed_identity"
    CERT_FOREIGN_TRUST_DOMAIN = "cert_foreign_trust_domain"
    CERT_NOT_A_DEVICE = "cert_not_a_device"
    CERT_NOT_AN_OPERATOR = "cert_not_an_operator"
    CERT_OPERATOR_INVALID = "cert_operator_invalid"
    CERT_PROFILE = "cert_profile"
    CERT_NOT_LEAF = "cert_not_leaf"
    CERT_KEY_USAGE = "cert_key_usage"
    CERT_NOT_ISSUED_BY_CA = "cert_not_issued_by_ca"
    CERT_ISSUING_CA = "cert_issuing_ca"  # the leaf's issuing CA breaks the issuing-CA profile
    CERT_NAME_CONSTRAINTS = "cert_name_constraints"  # the leaf is outside its issuing CA's names
    CERTIFICATE_REVOKED = "certificate_revoked"
    DEVICE_REVOKED = "device_revoked"
    ROLE_INSUFFICIENT = "role_insufficient"
    TOKEN_INVALID = "token_invalid"
    TOKEN_MISSING = "token_missing"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_DUPLICATE_MEMBER = "token_duplicate_member"
    TOKEN_HEADER = "token_header"
    TOKEN_AMBIGUOUS = "token_ambiguous"
    TOKEN_ALGORITHM = "token_algorithm"
    TOKEN_UNKNOWN_KID = "token_unknown_kid"
    TOKEN_SIGNATURE = "token_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_CLAIMS = "token_claims"
    TOKEN_LIFETIME = "token_lifetime"
    TOKEN_IDENTITY_MISMATCH = "token_identity_mismatch"
    TOKEN_BINDING_MISMATCH = "token_binding_mismatch"
    SESSION_SUPERSEDED = "session_superseded"
    AUTH_ERROR = "auth_error"
    AUTH_INTERNAL = "auth_internal"
    STORE_UNAVAILABLE = "store_unavailable"
    NO_CLIENT_CERT = "no_client_cert"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TOO_MANY_CALLS = "too_many_calls"
    MALFORMED_REQUEST = "malformed_request"  # audited: an operator request whose bytes do not parse
    CONSOLE_CSRF = "csrf"  # audited (the console's refusal of a POST without its CSRF token)


#: Labels no valid-but-for-one-thing input can reach: the base classes' own labels (only their
#: subclasses are raised), the catch-alls for a bug in our own code, a handshake without a client
#: certificate (TLS already requires one) and a method missing from the roles table.
FALLBACKS = frozenset(
    {
        Reason.CERT_IDENTITY,
        Reason.CERT_PROFILE,
        Reason.TOKEN_INVALID,
        Reason.AUTH_ERROR,
        Reason.AUTH_INTERNAL,
        Reason.NO_CLIENT_CERT,
        Reason.METHOD_NOT_ALLOWED,
    }
)
