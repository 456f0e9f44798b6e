from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.errors import ForeignTrustDomain, InvalidIdentifier, MalformedIdentity
from auth.identity import Identity, parse_spiffe_id, validate_id

TD = "audio.example.internal"
ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)


@given(ids, ids)
def test_spiffe_round_trip(tenant: str, device: str) -> None:
    identity = Identity(tenant, device)
    assert parse_spiffe_id(identity.spiffe_id(TD), TD) == identity


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://audio.example.internal",
        "spiffe://audio.example.internal/",
        "spiffe://audio.example.internal/tenant/acme",
        "spiffe://audio.example.internal/tenant/acme/device/",
        "spiffe://audio.example.internal/tenant/acme/device/d1/extra",
        "spiffe://audio.example.internal/tenant/ACME/device/d1",
        "spiffe://audio.example.internal/tenant//device/d1",
        "https://audio.example.internal/tenant/acme/device/d1",
        "spiffe://audio.example.internal/tenant/acme/device/d1?x=1",
        "spiffe://audio.example.internal/tenant/acme/device/d1\n",
    ],
)
def test_malformed_ids_rejected(uri: str) -> None:
    with pytest.raises(MalformedIdentity):
        parse_spiffe_id(uri, TD)


def test_foreign_trust_domain_rejected() -> None:
    with pytest.raises(ForeignTrustDomain):
        parse_spiffe_id("spiffe://other.example/tenant/acme/device/d1", TD)


@pytest.mark.parametrize("bad", ["", "A", "a b", "a/b", "-a", "é", "a" * 65, "a\x00"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_id(bad)


def test_same_device_in_two_tenants_are_two_identities() -> None:
    assert Identity("acme", "dev-1") != Identity("globex", "dev-1")
    assert len({Identity("acme", "dev-1"), Identity("globex", "dev-1")}) == 2
