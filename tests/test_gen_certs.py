"""scripts/gen_certs.py: every subcommand, permissions, refusal to overwrite, bad ids."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509

from auth.identity import DEFAULT_TRUST_DOMAIN, Identity, identity_from_certificate
from auth.tls import load_tls_material

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_certs.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_certs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_certs = _load()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_server_device_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    assert (
        gen_certs.main(["server", "--out", str(tmp_path), "--dns", "audio.example.com", "--ip", "10.0.0.5"])
        == 0
    )
    assert gen_certs.main(["device", "--out", str(tmp_path), "--tenant", "acme", "--device", "pi-7"]) == 0
    out = capsys.readouterr().out
    assert "created CA certificate" in out and "spiffe://" in out

    ca = cert(tmp_path / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = cert(tmp_path / "server.crt")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["audio.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    server.verify_directly_issued_by(ca)

    device_cert = tmp_path / "devices" / "acme" / "pi-7.crt"
    device = cert(device_cert)
    device.verify_directly_issued_by(ca)
    assert identity_from_certificate(device, DEFAULT_TRUST_DOMAIN) == Identity("acme", "pi-7")
    load_tls_material(device_cert, device_cert.with_suffix(".key"), tmp_path / "ca.crt")  # key matches

    for key in (tmp_path / "ca.key", tmp_path / "server.key", tmp_path / "devices/acme/pi-7.key"):
        assert mode(key) == 0o600
    assert mode(tmp_path / "ca.crt") == 0o644


def test_dev_pki_is_complete(tmp_path: Path) -> None:
    assert gen_certs.main(["dev", "--out", str(tmp_path)]) == 0
    server = cert(tmp_path / "server.crt")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    for tenant, device in (("acme", "dev-1"), ("acme", "dev-2"), ("globex", "dev-1")):
        path = tmp_path / "devices" / tenant / f"{device}.crt"
        assert identity_from_certificate(cert(path), DEFAULT_TRUST_DOMAIN) == Identity(tenant, device)
        assert mode(path.with_suffix(".key")) == 0o600


def test_custom_trust_domain(tmp_path: Path) -> None:
    gen_certs.main(["ca", "--out", str(tmp_path)])
    args = [
        "device",
        "--out",
        str(tmp_path),
        "--tenant",
        "t1",
        "--device",
        "d1",
        "--trust-domain",
        "fleet.example",
    ]
    assert gen_certs.main(args) == 0
    device = cert(tmp_path / "devices/t1/d1.crt")
    assert identity_from_certificate(device, "fleet.example") == Identity("t1", "d1")


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "ca.key").read_bytes()
    assert gen_certs.main(["ca", "--out", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "ca.key").read_bytes() == before
    assert gen_certs.main(["ca", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ca.key").read_bytes() != before
    assert mode(tmp_path / "ca.key") == 0o600


def test_device_refuses_overwrite(tmp_path: Path) -> None:
    gen_certs.main(["ca", "--out", str(tmp_path)])
    args = ["device", "--out", str(tmp_path), "--tenant", "acme", "--device", "d1"]
    assert gen_certs.main(args) == 0
    assert gen_certs.main(args) == 1


@pytest.mark.parametrize(
    ("tenant", "device"),
    [
        ("Acme", "d1"),
        ("acme\n", "d1"),
        ("acme", "d/1"),
        ("acme", "../etc"),
        ("", "d1"),
        ("acme", "x" * 65),
        ("acme", "-d1"),
        ("ac me", "d1"),
        ("acme", "d1\n"),
    ],
)
def test_rejects_bad_ids(
    tmp_path: Path, tenant: str, device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gen_certs.main(["ca", "--out", str(tmp_path)])
    assert gen_certs.main(["device", "--out", str(tmp_path), f"--tenant={tenant}", f"--device={device}"]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "devices").exists()


def test_server_and_device_need_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_certs.main(["server", "--out", str(tmp_path), "--dns", "x"]) == 1
    assert "missing" in capsys.readouterr().err


def test_server_needs_a_name(tmp_path: Path) -> None:
    gen_certs.main(["ca", "--out", str(tmp_path)])
    assert gen_certs.main(["server", "--out", str(tmp_path)]) == 1
    assert gen_certs.main(["server", "--out", str(tmp_path), "--ip", "not-an-ip"]) == 1


def test_runs_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "dev", "--out", str(tmp_path / "pki")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pki/devices/globex/dev-1.key").exists()


def test_signing_key(tmp_path: Path) -> None:
    from auth.keys import KID_PATTERN, load_keyring

    assert gen_certs.main(["signing-key", "--out", str(tmp_path)]) == 0
    assert gen_certs.main(["signing-key", "--out", str(tmp_path)]) == 0
    keys = sorted((tmp_path / "signing").iterdir())
    assert len(keys) == 2
    for key in keys:
        assert mode(key) == 0o600 and KID_PATTERN.fullmatch(key.stem)
    ring = load_keyring(tmp_path / "signing")
    assert ring.current.kid == keys[-1].stem  # the newest signs


def test_revoke_by_device_and_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auth.revocation import read_revocations

    assert gen_certs.main(["dev", "--out", str(tmp_path)]) == 0
    ca = cert(tmp_path / "ca.crt")
    dev1 = cert(tmp_path / "devices/acme/dev-1.crt").serial_number
    dev2 = cert(tmp_path / "devices/acme/dev-2.crt").serial_number
    assert gen_certs.main(["revoke", "--out", str(tmp_path), "--tenant", "acme", "--device", "dev-1"]) == 0
    assert read_revocations(tmp_path / "crl.pem", [ca]).serials == {dev1}
    assert gen_certs.main(["revoke", "--out", str(tmp_path), "--serial", f"{dev2:x}"]) == 0
    assert read_revocations(tmp_path / "crl.pem", [ca]).serials == {dev1, dev2}  # earlier entries kept
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert "revoked serial" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [["--tenant", "acme"], ["--tenant", "acme", "--device", "nobody"], ["--serial", "xyz"], []],
)
def test_revoke_needs_a_target(tmp_path: Path, args: list[str]) -> None:
    gen_certs.main(["dev", "--out", str(tmp_path)])
    assert gen_certs.main(["revoke", "--out", str(tmp_path), *args]) == 1
    assert not (tmp_path / "crl.pem").exists()


def test_dev_pki_has_a_signing_key(tmp_path: Path) -> None:
    gen_certs.main(["dev", "--out", str(tmp_path)])
    assert len(list((tmp_path / "signing").glob("*.key"))) == 1


def test_group_lets_the_container_read_only_the_server_keys(tmp_path: Path) -> None:
    import os

    gid = os.getgid() if os.getgid() != 0 else 10001
    assert gen_certs.main(["dev", "--out", str(tmp_path), "--group", str(gid)]) == 0
    shared = [tmp_path / "server.key", *(tmp_path / "signing").glob("*.key")]
    for path in shared:
        assert mode(path) == 0o640 and path.stat().st_gid == gid
    for private in (tmp_path / "ca.key", *(tmp_path / "devices").rglob("*.key")):
        assert mode(private) == 0o600  # never shared


def test_help_lists_each_command_once() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    usage = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("    gen_certs.py ")]
    assert len(usage) == len(set(usage)) and "operator" in usage, usage
