"""Bad certificate files give clear, documented errors before any connection attempt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from auth import pki as pki_lib
from auth.device_credentials import CredentialError, load_device_credentials
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from tests.helpers import EphemeralPki

TD = DEFAULT_TRUST_DOMAIN
NOW = dt.datetime.now(dt.UTC)


def write(tmp: Path, material: pki_lib.CertifiedKey, ca: pki_lib.CertifiedKey) -> tuple[Path, Path, Path]:
    cert, key, ca_path = tmp / "d.crt", tmp / "d.key", tmp / "ca.crt"
    pki_lib.write_certified_key(material, cert, key, force=True)
    ca_path.write_bytes(ca.cert_pem())
    return cert, key, ca_path


def test_good_credentials_name_the_identity(tmp_path: Path, pki: EphemeralPki) -> None:
    paths = write(tmp_path, pki.device("acme", "dev-1"), pki.ca)
    creds = load_device_credentials(*paths, TD)
    assert creds.identity == Identity("acme", "dev-1") and not creds.warnings


def test_key_readable_by_others_warns(tmp_path: Path, pki: EphemeralPki) -> None:
    cert, key, ca = write(tmp_path, pki.device("acme", "dev-1"), pki.ca)
    key.chmod(0o644)
    creds = load_device_credentials(cert, key, ca, TD)
    assert creds.warnings and "chmod 600" in creds.warnings[0]


CASES = {
    "missing certificate": ("cert-missing", "device certificate not found"),
    "unreadable key": ("key-garbage", "device private key is unreadable"),
    "key does not match": ("key-other", "does not match certificate"),
    "not signed by the CA": ("foreign-ca", "not signed by the CA"),
    "expired": ("expired", "expired on"),
    "not yet valid": ("future", "not valid until"),
    "no identity": ("no-san", "no device identity"),
    "empty CA file": ("ca-empty", "CA bundle is empty"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_credentials(case: str, tmp_path: Path, pki: EphemeralPki) -> None:
    variant, message = CASES[case]
    material = pki.device("acme", "dev-1")
    if variant == "expired":
        material = pki_issue(pki, NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1))
    elif variant == "future":
        material = pki_issue(pki, NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=30))
    elif variant == "no-san":
        material = pki.issue_plain()
    cert, key, ca_path = write(tmp_path, material, pki.ca)
    if variant == "cert-missing":
        cert.unlink()
    elif variant == "key-garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    elif variant == "key-other":
        key.write_bytes(pki.device("acme", "dev-2").key_pem())
    elif variant == "foreign-ca":
        ca_path.write_bytes(pki_lib.create_ca("Another CA").cert_pem())
    elif variant == "ca-empty":
        ca_path.write_text("")
    with pytest.raises(CredentialError, match=message):
        load_device_credentials(cert, key, ca_path, TD)


def pki_issue(p: EphemeralPki, not_before: dt.datetime, not_after: dt.datetime) -> pki_lib.CertifiedKey:
    uri = x509.UniformResourceIdentifier(Identity("acme", "dev-1").spiffe_id(TD))
    return pki_lib.issue_certificate(
        p.ca, "acme/dev-1", [uri], server=False, not_before=not_before, not_after=not_after
    )
