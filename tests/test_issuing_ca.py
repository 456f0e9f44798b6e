"""The issuing CA (auth.issuing_ca) and the device chains it makes possible: leaf -> issuing CA ->
root, honoured end to end over real TLS; everything else (another trust domain, a deeper chain,
an intermediate that is not an issuing CA) refused; revocation through the root's CRL; rotation."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from auth import pki as pki_lib
from auth.device_credentials import CredentialError, load_device_credentials
from auth.errors import (
    CertificateIssuingCa,
    CertificateNameConstraints,
    CertificateNotIssuedByCa,
    MaterialExists,
)
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.issuing_ca import (
    EXCLUDED,
    ISSUING_DIR,
    RETIRED_DIR,
    check_issuing_ca,
    create_issuing_ca,
    issuing_paths,
    name_constraints,
)
from auth.name_constraints import check_names
from auth.profile import check_chain, device_path, operator_identity
from auth.revocation import revoke
from auth.tls import TlsMaterial
from server.app import AudioServer
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, PLAY, EphemeralPki, auth_failures, counted_since, mode_of, wait_for
from tests.test_gen_certs import gen_certs
from tests.test_security import FAST_RELOAD, create_session

TD = DEFAULT_TRUST_DOMAIN
URI = x509.UniformResourceIdentifier
DENIED, UNAUTH = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


def intermediate(
    issuer: pki_lib.CertifiedKey,
    *,
    path_length: int | None = 0,
    critical_basic: bool = True,
    key_cert_sign: bool = True,
    constraints: x509.NameConstraints | None = None,
    critical_constraints: bool = True,
    omit_constraints: bool = False,
) -> pki_lib.CertifiedKey:
    """A CA certificate under ``issuer`` with one thing chosen (by default a proper issuing CA)."""
    key = pki_lib.new_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"odd CA {time.monotonic_ns()}")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=critical_basic)
        .add_extension(pki_lib.key_usage(ca=True, key_cert_sign=key_cert_sign), critical=True)
    )
    if not omit_constraints:
        builder = builder.add_extension(constraints or name_constraints(TD), critical=critical_constraints)
    return pki_lib.CertifiedKey(key, builder.sign(issuer.key, hashes.SHA256()))


def chain_tls(p: EphemeralPki, leaf: pki_lib.CertifiedKey, *cas: pki_lib.CertifiedKey) -> TlsMaterial:
    return TlsMaterial(
        leaf.cert_pem() + b"".join(ca.cert_pem() for ca in cas), leaf.key_pem(), p.ca.cert_pem()
    )


def device_leaf(ca: pki_lib.CertifiedKey, device: str, trust_domain: str = TD) -> pki_lib.CertifiedKey:
    return pki_lib.issue_device_cert(ca, Identity("acme", device), trust_domain)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the certificate gen_certs makes -------------------------------------------------------------


def test_gen_certs_issuing_ca_is_a_constrained_intermediate_in_a_directory_of_its_own(tmp_path: Path) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path)]) == 0
    cert_path, key_path = issuing_paths(tmp_path)
    assert cert_path.parent == key_path.parent == tmp_path / ISSUING_DIR
    assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
    root = x509.load_pem_x509_certificate((tmp_path / pki_lib.CA_CERT).read_bytes())
    ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca.verify_directly_issued_by(root)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    names = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert names.value.permitted_subtrees == [URI(TD)]
    assert set(names.value.excluded_subtrees or []) == set(EXCLUDED)
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=364) < life < dt.timedelta(days=366)
    assert check_issuing_ca(ca, TD) == names.value
    with pytest.raises(MaterialExists):  # never replaced by accident
        gen_certs.issuing_ca.write_issuing_ca(pki_lib.load_ca(tmp_path), tmp_path)
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path)]) == 1


def test_rotation_keeps_the_old_certificate_and_replaces_the_key(tmp_path: Path) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path)]) == 0
    cert_path, key_path = issuing_paths(tmp_path)
    old_cert, old_key = cert_path.read_bytes(), key_path.read_bytes()
    old = x509.load_pem_x509_certificate(old_cert)
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path), "--rotate"]) == 0
    retired = tmp_path / ISSUING_DIR / RETIRED_DIR / f"issuing-ca-{old.serial_number:x}.crt"
    assert retired.read_bytes() == old_cert
    assert cert_path.read_bytes() != old_cert and key_path.read_bytes() != old_key
    assert mode(key_path) == 0o600
    assert not list((tmp_path / ISSUING_DIR).rglob("*.key"))[1:]  # one key: the new one's


def test_a_device_issued_by_it_is_stored_as_leaf_and_ca_and_the_device_accepts_it(tmp_path: Path) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path)]) == 0
    args = ["device", "--out", str(tmp_path), "--tenant", "acme", "--device", "pi-9", "--issuing"]
    assert gen_certs.main(args) == 0
    cert_path, key_path = pki_lib.device_paths(tmp_path, Identity("acme", "pi-9"))
    leaf, ca = x509.load_pem_x509_certificates(cert_path.read_bytes())
    assert ca == x509.load_pem_x509_certificate(issuing_paths(tmp_path)[0].read_bytes())
    root = x509.load_pem_x509_certificate((tmp_path / pki_lib.CA_CERT).read_bytes())
    assert device_path(leaf, [root], TD, [ca]).issuing_ca == ca
    assert mode(key_path) == 0o600
    credentials = load_device_credentials(cert_path, key_path, tmp_path / pki_lib.CA_CERT, TD)
    assert credentials.identity == Identity("acme", "pi-9")
    expired = ca.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(CredentialError, match=r"issuing CA .* expired"):
        load_device_credentials(cert_path, key_path, tmp_path / pki_lib.CA_CERT, TD, now=expired)
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CredentialError, match="nor by an issuing CA"):  # the CA left out of the file
        load_device_credentials(cert_path, key_path, tmp_path / pki_lib.CA_CERT, TD)


def test_k8s_secrets_carry_the_issuing_key_in_a_secret_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gen_certs.main(["dev", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert gen_certs.main(["k8s-secrets", "--out", str(tmp_path)]) == 0
    names = [item["metadata"]["name"] for item in json.loads(capsys.readouterr().out)["items"]]
    assert "audio-issuing-ca" not in names  # none made yet: none published
    assert gen_certs.main(["issuing-ca", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert gen_certs.main(["k8s-secrets", "--out", str(tmp_path)]) == 0
    items = {item["metadata"]["name"]: item for item in json.loads(capsys.readouterr().out)["items"]}
    assert set(items["audio-issuing-ca"]["data"]) == {"issuing-ca.crt", "issuing-ca.key"}
    root_key = pki_lib.load_ca(tmp_path).key_pem()
    for item in items.values():  # the root's key is in no Secret
        assert all(base64.b64decode(value) != root_key for value in item["data"].values())


# --- the issuing-CA profile ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> pki_lib.CertifiedKey:
    return pki_lib.create_ca()


BAD_ISSUING_CAS: dict[str, Callable[[pki_lib.CertifiedKey], pki_lib.CertifiedKey]] = {
    "no path length limit": lambda r: intermediate(r, path_length=None),
    "pathLen 1": lambda r: intermediate(r, path_length=1),
    "BasicConstraints not critical": lambda r: intermediate(r, critical_basic=False),
    "no keyCertSign": lambda r: intermediate(r, key_cert_sign=False),
    "no name constraints": lambda r: intermediate(r, omit_constraints=True),
    "name constraints not critical": lambda r: intermediate(r, critical_constraints=False),
    "another trust domain": lambda r: intermediate(r, constraints=name_constraints("evil.example")),
    "a wider URI subtree": lambda r: intermediate(
        r,
        constraints=x509.NameConstraints([URI(TD), URI(".example.internal")], list(EXCLUDED)),
    ),
    "DNS names permitted": lambda r: intermediate(
        r, constraints=x509.NameConstraints([URI(TD), x509.DNSName("example.com")], list(EXCLUDED))
    ),
    "DNS and IP names not excluded": lambda r: intermediate(
        r, constraints=x509.NameConstraints([URI(TD)], None)
    ),
}


@pytest.mark.parametrize("case", list(BAD_ISSUING_CAS))
def test_an_intermediate_that_is_not_an_issuing_ca_of_this_fleet_is_refused(
    case: str, root: pki_lib.CertifiedKey
) -> None:
    ca = BAD_ISSUING_CAS[case](root)
    leaf = device_leaf(ca, "x")
    with pytest.raises(CertificateIssuingCa) as info:
        check_chain(leaf.cert, [ca.cert], [root.cert], TD)
    assert info.value.reason == "cert_issuing_ca"


def test_a_leaf_outside_the_name_constraints_is_refused_by_our_own_check(root: pki_lib.CertifiedKey) -> None:
    """BoringSSL refuses these in the handshake; the server's own check refuses them as well."""
    ca = create_issuing_ca(root, TD)
    for sans in (
        [URI(Identity("acme", "x").spiffe_id("evil.example"))],
        [URI(Identity("acme", "x").spiffe_id(TD)), x509.DNSName("audio.example.com")],
        [URI(Identity("acme", "x").spiffe_id(TD)), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
    ):
        leaf = pki_lib.issue_certificate(ca, "x", sans, server=False)
        with pytest.raises(CertificateNameConstraints) as info:
            device_path(leaf.cert, [root.cert], TD, [ca.cert])
        assert info.value.reason == "cert_name_constraints"
    good = device_leaf(ca, "x")
    assert device_path(good.cert, [root.cert], TD, [ca.cert]).identity == Identity("acme", "x")


def test_a_chain_one_level_deeper_is_refused(root: pki_lib.CertifiedKey) -> None:
    upper = intermediate(root, path_length=None)
    lower = intermediate(upper)  # a proper issuing CA, but of an intermediate, not of the root
    leaf = device_leaf(lower, "deep")
    with pytest.raises(CertificateNotIssuedByCa, match="at most"):
        check_chain(leaf.cert, [lower.cert, upper.cert], [root.cert], TD)
    with pytest.raises(CertificateNotIssuedByCa):  # an issuing CA the peer did not send is none
        check_chain(device_leaf(create_issuing_ca(root, TD), "y").cert, [], [root.cert], TD)


def test_operators_are_never_issued_by_an_issuing_ca(root: pki_lib.CertifiedKey) -> None:
    """The server holds the issuing key: it must not be able to mint operator roles."""
    from auth.operators import OperatorIdentity, Role

    ca = create_issuing_ca(root, TD)
    operator = pki_lib.issue_operator_cert(ca, OperatorIdentity("mallory", Role.ADMIN, "acme"), TD)
    with pytest.raises(CertificateNotIssuedByCa):
        operator_identity(operator.cert, [root.cert], TD)


def test_uri_constraints_match_the_host_and_nothing_but_the_host() -> None:
    exact = x509.NameConstraints([URI(TD)], None)
    check_names([URI(f"spiffe://{TD}/tenant/a/device/b"), URI(f"spiffe://{TD.upper()}/x")], exact)
    for outside in (f"spiffe://sub.{TD}/x", "spiffe://evil.example/x", "urn:no-host"):
        with pytest.raises(CertificateNameConstraints):
            check_names([URI(outside)], exact)
    below = x509.NameConstraints([URI(".example.internal")], None)
    check_names([URI("spiffe://audio.example.internal/x")], below)
    with pytest.raises(CertificateNameConstraints):
        check_names([URI("spiffe://example.internal/x")], below)  # a leading dot: subdomains only
    dns = x509.NameConstraints(
        [x509.DNSName("example.com")], [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]
    )
    check_names([x509.DNSName("a.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))], dns)
    for name in (x509.DNSName("example.org"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))):
        with pytest.raises(CertificateNameConstraints):
            check_names([name], dns)
    with pytest.raises(CertificateNameConstraints):  # a type we do not evaluate, under a CA constraining it
        check_names([x509.RFC822Name("a@b.c")], x509.NameConstraints([x509.RFC822Name("b.c")], None))


# --- end to end: real server, real TLS -----------------------------------------------------------


async def test_a_device_issued_by_the_issuing_ca_connects_beside_one_the_root_signed(
    server: AudioServer, pki: EphemeralPki, connect: Connect
) -> None:
    async with (
        connect(server, "acme", "enrolled-1", tls=pki.issued_tls("acme", "enrolled-1")) as enrolled,
        connect(server, "acme", "classic-1") as classic,
    ):
        for device in (enrolled, classic):
            await device.press(MODE)
            await wait_for(lambda d=device: mode_of(d.view.leds) == 1)  # type: ignore[misc]
            await device.press(PLAY)
            await wait_for(lambda d=device: d.packets_received > 2)  # type: ignore[misc]
        assert not enrolled.ends and not classic.ends
        live = {session.identity: session for session in server.registry.live_sessions()}
        assert live[Identity("acme", "enrolled-1")].issuer_serial == pki.issuing_ca().cert.serial_number
        assert live[Identity("acme", "classic-1")].issuer_serial is None


async def test_a_certificate_for_another_trust_domain_is_refused(
    server: AudioServer, pki: EphemeralPki
) -> None:
    # Through this fleet's issuing CA: its name constraints refuse it in the handshake.
    leaf = device_leaf(pki.issuing_ca(), "x", "evil.example")
    before = auth_failures()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(server.port, chain_tls(pki, leaf, pki.issuing_ca()))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert counted_since(before) == {}  # never reached the application
    # Through an issuing CA the root made for another trust domain: TLS accepts the chain (the
    # leaf is inside that CA's names), the server does not.
    foreign = intermediate(pki.ca, constraints=name_constraints("evil.example"))
    leaf = device_leaf(foreign, "x", "evil.example")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(server.port, chain_tls(pki, leaf, foreign))
    assert info.value.code() == UNAUTH
    assert "issuing CA" in (info.value.details() or "")
    assert counted_since(before) == {"cert_issuing_ca": 1}


async def test_a_chain_one_level_deeper_is_refused_end_to_end(server: AudioServer, pki: EphemeralPki) -> None:
    upper = intermediate(pki.ca, path_length=None)
    lower = intermediate(upper)
    leaf = device_leaf(lower, "deep")
    before = auth_failures()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(server.port, chain_tls(pki, leaf, lower, upper))
    assert info.value.code() == UNAUTH  # TLS took the chain: the application refused it
    assert counted_since(before) == {"cert_not_issued_by_ca": 1}


async def test_revoking_an_enrolled_device_or_its_issuing_ca_in_the_roots_crl(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    issuing = create_issuing_ca(pki.ca, TD)
    stolen_leaf = device_leaf(issuing, "stolen")
    stolen, sibling = chain_tls(pki, stolen_leaf, issuing), pki.issued_tls("acme", "sibling", issuing)
    async with (
        connect(app, "acme", "sibling", tls=sibling) as live,
        connect(app, "acme", "classic") as classic,
    ):
        await live.press(MODE)
        revoke(pki.ca, crl, [stolen_leaf.cert.serial_number])  # one device the issuing CA issued
        before = auth_failures()
        await wait_for(lambda: app.trust.is_revoked(stolen_leaf.cert.serial_number))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_session(app.port, stolen)
        assert info.value.code() == DENIED
        assert counted_since(before) == {"certificate_revoked": 1}
        assert not live.ends  # its sibling of the same issuing CA is fine
        revoke(pki.ca, crl, [issuing.cert.serial_number])  # the issuing CA itself
        await wait_for(lambda: len(live.ends) >= 3, timeout=2)
        assert {live.ends[k].code for k in ("status", "event", "audio")} == {DENIED}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_session(app.port, pki.issued_tls("acme", "newcomer", issuing))
        assert info.value.code() == DENIED
        assert "issuing CA" in (info.value.details() or "")
        await classic.press(MODE)  # a device the root signed is not touched
        await wait_for(lambda: mode_of(classic.view.leds) == 1)
        assert not classic.ends


async def test_issuing_ca_rotation_devices_of_both_connect(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    """A new issuing CA is signed while the old one still verifies: the server needs neither CA
    certificate (each device sends its own); devices of both keep connecting until the old one
    expires or is revoked."""
    crl = tmp_path / "crl.pem"
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    old, new = create_issuing_ca(pki.ca, TD), create_issuing_ca(pki.ca, TD)
    assert old.cert.subject != new.cert.subject
    async with (
        connect(app, "acme", "before", tls=pki.issued_tls("acme", "before", old)) as before,
        connect(app, "acme", "after", tls=pki.issued_tls("acme", "after", new)) as after,
    ):
        for device in (before, after):
            await device.press(MODE)
            await wait_for(lambda d=device: mode_of(d.view.leds) == 1)  # type: ignore[misc]
        revoke(pki.ca, crl, [old.cert.serial_number])  # retiring the old one early cuts only its devices
        await wait_for(lambda: len(before.ends) >= 3, timeout=2)
        await after.press(MODE)
        await wait_for(lambda: mode_of(after.view.leds) == 2)
        assert not after.ends
