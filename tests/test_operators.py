"""Operator identities (issue 11's first piece): certificates with a signed role, kept apart from devices."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from auth import pki as pki_lib
from auth.errors import IdentityError
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import (
    OperatorCertificateError,
    OperatorIdentity,
    Role,
    is_operator_path,
    operator_from_certificate,
)
from auth.profile import check_issued_by, check_leaf
from auth.tls import channel_credentials
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc
from server.app import AudioServer
from tests.helpers import EphemeralPki, auth_failures, counted_since
from tests.test_auth_rejections import call_each_method
from tests.test_gen_certs import gen_certs

TD = DEFAULT_TRUST_DOMAIN


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_gen_certs_writes_tenant_and_platform_operators(tmp_path: Path) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    assert (
        gen_certs.main(
            ["operator", "--out", str(tmp_path), "--tenant", "acme", "--name", "alice", "--role", "admin"]
        )
        == 0
    )
    assert (
        gen_certs.main(
            ["operator", "--out", str(tmp_path), "--platform", "--name", "root", "--role", "viewer"]
        )
        == 0
    )
    ca = load(tmp_path / "ca.crt")
    alice = load(tmp_path / "operators" / "acme" / "alice.crt")
    root = load(tmp_path / "operators" / "_platform" / "root.crt")
    assert operator_from_certificate(alice, TD) == OperatorIdentity("alice", Role.ADMIN, "acme")
    assert operator_from_certificate(root, TD) == OperatorIdentity("root", Role.VIEWER, None)
    for cert, key in ((alice, "acme/alice.key"), (root, "_platform/root.key")):
        check_leaf(cert)  # the same leaf profile as devices
        check_issued_by(cert, [ca])
        assert stat.S_IMODE((tmp_path / "operators" / key).stat().st_mode) == 0o600
    with pytest.raises(SystemExit):  # a role that does not exist is refused by the command line
        gen_certs.main(
            ["operator", "--out", str(tmp_path), "--tenant", "acme", "--name", "bob", "--role", "root"]
        )


def test_roles_are_ordered_and_tenants_scoped() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    acme = OperatorIdentity("alice", Role.OPERATOR, "acme")
    platform = OperatorIdentity("root", Role.ADMIN, None)
    assert acme.may_see("acme") and not acme.may_see("globex")
    assert platform.may_see("acme") and platform.may_see("globex") and platform.platform


def _operator_like(ca: pki_lib.CertifiedKey, uri: str, roles: list[str]) -> x509.Certificate:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "x")]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role) for role in roles]
    )
    return pki_lib.issue_certificate(
        ca, "x", [x509.UniformResourceIdentifier(uri)], server=False, subject=subject
    ).cert


@pytest.mark.parametrize(
    ("uri", "roles"),
    [
        (f"spiffe://{TD}/tenant/acme/operator/alice", []),  # no role signed in
        (f"spiffe://{TD}/tenant/acme/operator/alice", ["role:admin", "role:viewer"]),  # two roles
        (f"spiffe://{TD}/tenant/acme/operator/alice", ["role:root"]),  # no such role
        (f"spiffe://{TD}/tenant/acme/device/alice", ["role:admin"]),  # a device, not an operator
        (f"spiffe://{TD}/tenant/ACME/operator/alice", ["role:admin"]),  # a bad tenant id
        ("spiffe://evil.example/platform/operator/root", ["role:admin"]),  # another trust domain
    ],
)
def test_malformed_operator_certificates_are_refused(uri: str, roles: list[str]) -> None:
    ca = pki_lib.create_ca()
    with pytest.raises(IdentityError):
        operator_from_certificate(_operator_like(ca, uri, roles), TD)


def test_operator_paths_are_recognised_and_devices_are_not() -> None:
    assert is_operator_path(f"spiffe://{TD}/tenant/acme/operator/alice")
    assert is_operator_path(f"spiffe://{TD}/platform/operator/root")
    assert not is_operator_path(Identity("acme", "dev-1").spiffe_id(TD))
    with pytest.raises(OperatorCertificateError) as info:
        operator_from_certificate(
            pki_lib.issue_device_cert(pki_lib.create_ca(), Identity("acme", "dev-1")).cert, TD
        )
    assert info.value.reason == "cert_operator_invalid"


async def test_operator_certificates_never_call_the_device_services(
    server: AudioServer, pki: EphemeralPki
) -> None:
    """Refused by the one authentication layer, with its own counted reason, on every call."""
    operator = pki_lib.issue_operator_cert(pki.ca, OperatorIdentity("alice", Role.ADMIN, "acme"))
    creds = channel_credentials(pki.tls(operator))
    before = auth_failures()
    codes = await call_each_method(server.port, creds)
    assert codes == {"status": grpc.StatusCode.UNAUTHENTICATED} | {
        "event": grpc.StatusCode.UNAUTHENTICATED,
        "audio": grpc.StatusCode.UNAUTHENTICATED,
    }
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "operator certificate" in (info.value.details() or "")
    assert counted_since(before) == {"cert_not_a_device": 4}
