"""The device certificate profile (auth.profile) and that gen_certs never breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth import pki
from auth.errors import (
    AmbiguousIdentity,
    CertificateKeyUsage,
    CertificateNotIssuedByCa,
    CertificateNotLeaf,
    MissingIdentity,
)
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.profile import check_issued_by, check_leaf, device_identity
from tests.helpers import build_cert
from tests.test_gen_certs import gen_certs

URI = x509.UniformResourceIdentifier
TD = DEFAULT_TRUST_DOMAIN
ACME_1 = URI(Identity("acme", "dev-1").spiffe_id(TD))


@pytest.fixture(scope="module")
def ca() -> pki.CertifiedKey:
    return pki.create_ca()


def test_a_proper_device_certificate_passes(ca: pki.CertifiedKey) -> None:
    device = pki.issue_device_cert(ca, Identity("acme", "dev-1"))
    assert device_identity(device.cert, [ca.cert], TD) == Identity("acme", "dev-1")


def test_ca_true_alone_is_refused_as_not_a_leaf(ca: pki.CertifiedKey) -> None:
    """CA:TRUE with a plain leaf key usage: only the basic-constraints rule can refuse it."""
    cert = build_cert(ca, [ACME_1], ca=True, key_usage={"key_cert_sign": False, "crl_sign": False}).cert
    with pytest.raises(CertificateNotLeaf) as info:
        device_identity(cert, [ca.cert], TD)
    assert info.value.reason == "cert_not_leaf"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda ca: build_cert(ca, [ACME_1], ca=True), CertificateNotLeaf),
        (lambda ca: build_cert(ca, [ACME_1], ca=None), CertificateNotLeaf),
        (lambda ca: build_cert(ca, [ACME_1], omit_key_usage=True), CertificateKeyUsage),
        (lambda ca: build_cert(ca, [ACME_1], key_usage={"digital_signature": False}), CertificateKeyUsage),
        (lambda ca: build_cert(ca, [ACME_1], key_usage={"key_cert_sign": True}), CertificateKeyUsage),
        (lambda ca: build_cert(ca, [ACME_1], key_usage={"crl_sign": True}), CertificateKeyUsage),
    ],
    ids=["CA:TRUE", "no BasicConstraints", "no KeyUsage", "no digitalSignature", "keyCertSign", "cRLSign"],
)
def test_leaf_rules(ca: pki.CertifiedKey, make: object, error: type[Exception]) -> None:
    cert = make(ca).cert  # type: ignore[operator]
    with pytest.raises(error) as info:
        check_leaf(cert)
    assert info.value.reason.startswith("cert_")  # type: ignore[attr-defined]
    with pytest.raises(error):
        device_identity(cert, [ca.cert], TD)


def test_a_leaf_minted_by_an_intermediate_is_not_issued_by_the_ca(ca: pki.CertifiedKey) -> None:
    intermediate = build_cert(ca, [], ca=True)
    minted = build_cert(intermediate, [URI(Identity("globex", "victim").spiffe_id(TD))])
    check_leaf(minted.cert)  # a well-formed leaf...
    with pytest.raises(CertificateNotIssuedByCa):
        device_identity(minted.cert, [ca.cert], TD)  # ...but not signed by the fleet CA itself
    assert check_issued_by(minted.cert, [ca.cert, intermediate.cert]) == intermediate.cert


def test_a_foreign_ca_with_the_same_name_is_not_the_issuer(ca: pki.CertifiedKey) -> None:
    impostor = pki.create_ca(ca.cert.subject.rfc4514_string().split("=", 1)[1])
    forged = pki.issue_device_cert(impostor, Identity("acme", "dev-1"))
    with pytest.raises(CertificateNotIssuedByCa):
        check_issued_by(forged.cert, [ca.cert])


def test_any_ca_of_the_bundle_may_issue(ca: pki.CertifiedKey) -> None:
    new_ca = pki.create_ca("Next Fleet CA")
    device = pki.issue_device_cert(new_ca, Identity("acme", "dev-9"))
    assert device_identity(device.cert, [ca.cert, new_ca.cert], TD) == Identity("acme", "dev-9")


def test_identity_rules_still_apply_to_good_leaves(ca: pki.CertifiedKey) -> None:
    with pytest.raises(AmbiguousIdentity):
        device_identity(
            build_cert(ca, [ACME_1, URI(Identity("acme", "dev-2").spiffe_id(TD))]).cert, [ca.cert], TD
        )
    with pytest.raises(MissingIdentity):
        device_identity(build_cert(ca, []).cert, [ca.cert], TD)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_gen_certs_subcommand_follows_the_profile(tmp_path: Path) -> None:
    """ca, server, device and dev: every leaf they write passes the checks the server applies."""
    split = tmp_path / "split"
    assert gen_certs.main(["ca", "--out", str(split)]) == 0
    assert gen_certs.main(["server", "--out", str(split), "--dns", "audio.example.com"]) == 0
    assert gen_certs.main(["device", "--out", str(split), "--tenant", "acme", "--device", "pi-7"]) == 0
    dev = tmp_path / "dev"
    assert gen_certs.main(["dev", "--out", str(dev)]) == 0
    for root in (split, dev):
        ca = _cert(root / pki.CA_CERT)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        server = _cert(root / pki.SERVER_CERT)
        check_leaf(server)
        check_issued_by(server, [ca])
        devices = sorted((root / pki.DEVICES_DIR).rglob("*.crt"))
        assert devices
        for path in devices:
            identity = device_identity(_cert(path), [ca], TD)
            assert path == root / pki.DEVICES_DIR / identity.tenant / f"{identity.device_id}.crt"


def test_the_extension_helpers_make_a_ca_and_leaves_the_profile_tells_apart(ca: pki.CertifiedKey) -> None:
    """One definition of CA and leaf extensions (pki): a CA signs certificates and CRLs, limited to
    leaves; both leaf kinds pass the profile, with the purpose their kind needs."""
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.ca and constraints.path_length == 0
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    with pytest.raises(CertificateNotLeaf):
        check_leaf(ca.cert)
    server = pki.issue_server_cert(ca, ["audio.example.com"], [])
    device = pki.issue_device_cert(ca, Identity("acme", "dev-1"))
    for leaf, purpose in (
        (server, ExtendedKeyUsageOID.SERVER_AUTH),
        (device, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        check_leaf(leaf.cert)
        assert list(leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [purpose]
    assert pki.key_usage(ca=False) == device.cert.extensions.get_extension_for_class(x509.KeyUsage).value
