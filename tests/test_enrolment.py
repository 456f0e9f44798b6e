"""Enrolment with one-time codes, end to end: real server (its own server-only TLS listener), the
real device side (audio-device enroll), real TLS; the codes in the shared store (memory, SQLite,
Redis), single use under a race, expiry, cancelling, tenants apart, CSRs checked, all audited."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from auth.device_credentials import load_device_credentials
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from comms.gen import admin_pb2 as apb
from comms.gen import enroll_pb2 as epb
from comms.gen import enroll_pb2_grpc as epb_grpc
from device.enrol import EnrolmentFailed, enrol, new_request
from server.app import AudioServer
from server.enrolment.service import CODE_EXPIRED_TEXT, CODE_INVALID_TEXT, TOO_MANY_TEXT
from server.state.enrolment_codes import new_code, normalise
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, sample, wait_for
from tests.redis_server import RedisServer

TD = DEFAULT_TRUST_DOMAIN
UNAUTH, INVALID = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def enrolling(server_factory: ServerFactory, pki: EphemeralPki) -> AudioServer:
    pki.issuing_ca()  # written where the server looks (PKI_DIR/issuing)
    return await server_factory(enroll_bind="127.0.0.1:0")


async def create_codes(app: AudioServer, admin: Admin, **request: Any) -> apb.CreateEnrollmentsResponse:
    async with admin(app, "acme", role="operator") as ops:
        return await ops.CreateEnrollments(apb.CreateEnrollmentsRequest(**request))


async def code_for(app: AudioServer, admin: Admin, device: str, **request: Any) -> tuple[str, str]:
    """(code, CA fingerprint) for acme/``device``."""
    made = await create_codes(app, admin, device_id=device, **request)
    return made.enrollments[0].code, made.ca_fingerprint


async def audit_of(app: AudioServer, tenant: str | None, action: str) -> list[Any]:
    events, _ = await app.audit.list(tenant, 1000)
    return [e for e in events if e.action == action]


def enroll_call(app: AudioServer, pki: EphemeralPki, code: str, csr: bytes) -> Any:
    """A raw Enroll call (for requests the real device side would never make)."""

    async def call() -> epb.EnrollResponse:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())
        async with grpc.aio.secure_channel(f"127.0.0.1:{app.enroll_port}", creds) as channel:
            return await epb_grpc.EnrollmentServiceStub(channel).Enroll(
                epb.EnrollRequest(code=code, csr=csr), timeout=10
            )

    return call()


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def csr_with(key: Any, sans: list[x509.GeneralName], cn: str = "acme/other") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# --- end to end -----------------------------------------------------------------------------------


async def test_a_device_enrols_with_a_code_and_then_connects(
    enrolling: AudioServer, pki: EphemeralPki, admin: Admin, connect: Connect, tmp_path: Path
) -> None:
    code, pin = await code_for(enrolling, admin, "kitchen-1")
    assert pin.startswith("SHA256:") and len(pin) == 7 + 64
    before = sample("audio_enrolments_total", result="ok")
    device_dir = tmp_path / "device"
    done = await enrol(
        f"127.0.0.1:{enrolling.enroll_port}", code, device_dir, ca_fingerprint=pin, server_name="localhost"
    )
    assert done.identity == Identity("acme", "kitchen-1")
    assert stat.S_IMODE(done.key_path.stat().st_mode) == 0o600
    assert done.ca_path.read_bytes() == pki.ca.cert_pem()
    leaf, issuing = x509.load_pem_x509_certificates(done.cert_path.read_bytes())
    assert issuing == pki.issuing_ca().cert
    credentials = load_device_credentials(done.cert_path, done.key_path, done.ca_path, TD)
    assert credentials.identity == Identity("acme", "kitchen-1")
    assert sample("audio_enrolments_total", result="ok") == before + 1
    async with connect(enrolling, "acme", "kitchen-1", tls=credentials.tls) as device:
        await device.press(MODE)
        await wait_for(lambda: mode_of(device.view.leds) == 1)
    (used,) = await audit_of(enrolling, "acme", "Enroll")
    assert used.result == "OK" and used.target == "kitchen-1"
    assert used.parameters["serial"] == f"{leaf.serial_number:x}"
    (created,) = await audit_of(enrolling, "acme", "CreateEnrollments")
    assert created.parameters["enrollments"] == [used.parameters["enrollment"]]
    assert code not in str(created) and normalise(code) not in str(created)  # the code is never kept
    async with admin(enrolling, "acme", role="operator") as ops:  # used: no longer pending
        assert not (await ops.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments


async def test_the_enrolment_port_is_server_only_tls_and_serves_nothing_else(
    enrolling: AudioServer, pki: EphemeralPki
) -> None:
    from comms.gen import session_pb2 as spb
    from comms.gen import session_pb2_grpc as spb_grpc

    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())  # no client certificate
    async with grpc.aio.secure_channel(f"127.0.0.1:{enrolling.enroll_port}", creds) as channel:
        call = spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest(), timeout=10)
        assert (await refusal(call)).code() == grpc.StatusCode.UNIMPLEMENTED
    async with grpc.aio.secure_channel(f"127.0.0.1:{enrolling.port}", creds) as channel:  # the device port
        call = epb_grpc.EnrollmentServiceStub(channel).Enroll(epb.EnrollRequest(), timeout=10)
        assert (await refusal(call)).code() == grpc.StatusCode.UNAVAILABLE  # mTLS: no handshake


async def test_a_wrong_fingerprint_sends_nothing(
    enrolling: AudioServer, admin: Admin, tmp_path: Path
) -> None:
    code, _ = await code_for(enrolling, admin, "pinned")
    with pytest.raises(EnrolmentFailed, match="did not present the CA"):
        await enrol(
            f"127.0.0.1:{enrolling.enroll_port}", code, tmp_path, ca_fingerprint="SHA256:" + "ab" * 32
        )
    assert not list(tmp_path.rglob("*.key"))
    async with admin(enrolling, "acme", role="operator") as ops:  # the code was never sent: still pending
        pending = (await ops.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments
    assert [e.device_id for e in pending] == ["pinned"]


# --- the code ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_two_devices_racing_one_code_exactly_one_wins(
    backend: str, server_factory: ServerFactory, pki: EphemeralPki, admin: Admin, tmp_path: Path
) -> None:
    pki.issuing_ca()
    redis = RedisServer(tmp_path / "redis").start() if backend == "redis" else None
    try:
        extra = {"redis_url": redis.url} if redis is not None else {}
        app = await server_factory(enroll_bind="127.0.0.1:0", state_backend=backend, **extra)
        await _race(app, pki, admin)
        await app.stop(grace_s=1.0)  # before its Redis goes
    finally:
        if redis is not None:
            redis.stop()


async def _race(enrolling: AudioServer, pki: EphemeralPki, admin: Admin) -> None:
    code, _ = await code_for(enrolling, admin, "raced")
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    results = await asyncio.gather(
        *(enroll_call(enrolling, pki, code, new_request(k)) for k in keys), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, epb.EnrollResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 7
    assert {(e.code(), e.details()) for e in lost} == {(UNAUTH, CODE_INVALID_TEXT)}
    events = await audit_of(enrolling, None, "Enroll")
    assert sorted(e.result for e in events) == ["OK"] + ["UNAUTHENTICATED"] * 7


async def test_an_expired_code_is_refused_and_audited(
    server_factory: ServerFactory, pki: EphemeralPki, admin: Admin
) -> None:
    pki.issuing_ca()
    app = await server_factory(enroll_bind="127.0.0.1:0")
    code, _ = await code_for(app, admin, "late", ttl_s=60)
    assert app.enrolment_codes is not None
    app.enrolment_codes._clock = lambda: 10.0**10  # far past the code's expiry
    error = await refusal(enroll_call(app, pki, code, new_request(ec.generate_private_key(ec.SECP256R1()))))
    assert (error.code(), error.details()) == (UNAUTH, CODE_EXPIRED_TEXT)
    (event,) = await audit_of(app, "acme", "Enroll")
    assert event.result == "UNAUTHENTICATED" and event.target == "late"
    assert event.parameters["reason"] == "code_expired"


async def test_a_cancelled_code_is_refused(enrolling: AudioServer, pki: EphemeralPki, admin: Admin) -> None:
    made = await create_codes(enrolling, admin, device_id="cancelled")
    async with admin(enrolling, "acme", role="operator") as ops:
        cancelled = await ops.CancelEnrollment(apb.CancelEnrollmentRequest(id=made.enrollments[0].id))
        assert cancelled.device_id == "cancelled" and not cancelled.code
        again = await refusal(ops.CancelEnrollment(apb.CancelEnrollmentRequest(id=made.enrollments[0].id)))
        assert again.code() == grpc.StatusCode.NOT_FOUND
    key = ec.generate_private_key(ec.SECP256R1())
    error = await refusal(enroll_call(enrolling, pki, made.enrollments[0].code, new_request(key)))
    assert (error.code(), error.details()) == (UNAUTH, CODE_INVALID_TEXT)
    (cancel,) = [e for e in await audit_of(enrolling, "acme", "CancelEnrollment") if e.result == "OK"]
    assert cancel.target == "cancelled" and cancel.parameters["enrollment"] == made.enrollments[0].id


async def test_another_tenants_codes_are_not_found(enrolling: AudioServer, admin: Admin) -> None:
    async with admin(enrolling, "globex", role="operator") as globex:
        theirs = await globex.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id="g-1"))
    async with admin(enrolling, "acme", role="operator") as acme:
        assert not (await acme.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments
        error = await refusal(acme.CancelEnrollment(apb.CancelEnrollmentRequest(id=theirs.enrollments[0].id)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        error = await refusal(
            acme.CreateEnrollments(apb.CreateEnrollmentsRequest(tenant="globex", device_id="x"))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    async with admin(enrolling, "globex", role="operator") as globex:
        (still,) = (await globex.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments
        assert still.id == theirs.enrollments[0].id and not still.code
    async with admin(enrolling, None, role="operator", name="platform") as platform:
        everyone = (await platform.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments
        assert [(e.tenant, e.device_id) for e in everyone] == [("globex", "g-1")]


async def test_many_codes_at_once_and_their_bounds(enrolling: AudioServer, admin: Admin) -> None:
    made = await create_codes(enrolling, admin, count=3, prefix="kitchen-", ttl_s=3600)
    assert [e.device_id for e in made.enrollments] == ["kitchen-1", "kitchen-2", "kitchen-3"]
    assert len({e.code for e in made.enrollments}) == 3
    assert all(normalise(e.code) for e in made.enrollments)
    assert all(abs(e.expires_unix - e.created_unix - 3600) < 1 for e in made.enrollments)
    for bad in (
        {"device_id": "x", "count": 2, "prefix": "p-"},
        {"count": 2},
        {"count": 1001, "prefix": "p-"},
        {"device_id": "Not An Id"},
        {"device_id": "x", "ttl_s": 10},
        {"device_id": "x", "ttl_s": 31 * 86_400},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_codes(enrolling, admin, **bad)
        assert info.value.code() == INVALID, bad


async def test_a_viewer_cannot_make_codes_and_without_enrolment_nobody_can(
    server: AudioServer, enrolling: AudioServer, admin: Admin
) -> None:
    async with admin(enrolling, "acme", role="viewer") as viewer:
        error = await refusal(viewer.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id="x")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    async with admin(server, "acme", role="operator") as ops:  # a server without --enroll-bind
        error = await refusal(ops.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id="x")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "--enroll-bind" in (error.details() or "")


# --- the CSR ----------------------------------------------------------------------------------------


async def test_a_csr_asking_for_another_identity_gets_the_codes(
    enrolling: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    code, _ = await code_for(enrolling, admin, "honest")
    key = ec.generate_private_key(ec.SECP256R1())
    greedy = csr_with(
        key,
        [
            x509.UniformResourceIdentifier(Identity("globex", "admin").spiffe_id(TD)),
            x509.DNSName("localhost"),
        ],
        cn="globex/admin",
    )
    response = await enroll_call(enrolling, pki, code, greedy)
    leaf = x509.load_pem_x509_certificates(response.certificate_chain)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(Identity("acme", "honest").spiffe_id(TD))]
    assert leaf.subject.rfc4514_string() == "CN=acme/honest"
    assert (response.tenant, response.device_id) == ("acme", "honest")
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("csr", "words"),
    [
        (lambda: b"", "no CSR"),
        (lambda: b"\x30\x03\x02\x01\x00", "not a PKCS#10"),
        (
            lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
            "not a PKCS#10",
        ),
        (lambda: b"\x30" * 5000, "at most"),
        (lambda: csr_with(rsa.generate_private_key(65537, 2048), []), "EC P-256"),
        (lambda: csr_with(ec.generate_private_key(ec.SECP384R1()), []), "EC P-256"),
        (lambda: _tampered(), "signature"),
    ],
    ids=["empty", "garbage", "bad PEM", "oversized", "RSA", "P-384", "bad signature"],
)
async def test_a_malformed_csr_is_invalid_argument_in_our_words_and_keeps_the_code(
    enrolling: AudioServer, pki: EphemeralPki, admin: Admin, csr: Any, words: str
) -> None:
    code, _ = await code_for(enrolling, admin, "careful")
    error = await refusal(enroll_call(enrolling, pki, code, csr()))
    assert error.code() == INVALID and words in (error.details() or "")
    assert "Traceback" not in (error.details() or "") and "asn1" not in (error.details() or "").lower()
    (event,) = await audit_of(enrolling, None, "Enroll")
    assert event.result == "INVALID_ARGUMENT" and event.parameters["reason"] == "csr_invalid"
    response = await enroll_call(enrolling, pki, code, new_request(ec.generate_private_key(ec.SECP256R1())))
    assert response.device_id == "careful"  # a bad request never burns the code


def _tampered() -> bytes:
    der = bytearray(new_request(ec.generate_private_key(ec.SECP256R1())))
    der[-3] ^= 0x01  # inside the signature
    return bytes(der)


# --- guessing -------------------------------------------------------------------------------------


async def test_guessing_is_rate_limited_per_address_and_audited(
    server_factory: ServerFactory, pki: EphemeralPki, admin: Admin
) -> None:
    pki.issuing_ca()
    app = await server_factory(enroll_bind="127.0.0.1:0", enroll_failures_per_min=3)
    code, _ = await code_for(app, admin, "target")
    csr = new_request(ec.generate_private_key(ec.SECP256R1()))
    for _ in range(3):
        assert (await refusal(enroll_call(app, pki, new_code(), csr))).code() == UNAUTH
    error = await refusal(enroll_call(app, pki, code, csr))  # even the right code, from this address
    assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_TEXT)
    events = await audit_of(app, None, "Enroll")
    assert sorted(e.parameters["reason"] for e in events) == ["code_invalid"] * 3 + ["too_many_failures"]
    assert sample("audio_enrolments_total", result="too_many_failures") >= 1
    async with admin(app, "acme", role="operator") as ops:  # the real code was not taken
        assert [
            e.device_id for e in (await ops.ListEnrollments(apb.ListEnrollmentsRequest())).enrollments
        ] == ["target"]


async def test_a_malformed_code_is_invalid_argument(enrolling: AudioServer, pki: EphemeralPki) -> None:
    csr = new_request(ec.generate_private_key(ec.SECP256R1()))
    for code in ("", "1234", "ABCD-EFGH-IJKL-MNO!", "x" * 5000):
        error = await refusal(enroll_call(enrolling, pki, code, csr))
        assert error.code() == INVALID and "XXXX-XXXX-XXXX-XXXX" in (error.details() or "")


def test_codes_are_random_enough_and_read_back_however_typed() -> None:
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000
    code = codes.pop()
    assert len(normalise(code) or "") * 5 >= 64
    assert normalise(code.lower().replace("-", " ")) == normalise(code)
    assert normalise(code + "A") is None


# --- the operator's CLI and the device's command ------------------------------------------------------


async def test_the_cli_makes_codes_lists_and_cancels_them_and_a_device_enrols_from_its_command(
    enrolling: AudioServer, pki: EphemeralPki, tmp_path: Path
) -> None:
    import csv
    import io
    import sys

    from auth.operators import Role
    from tests.test_admin_cli import ENV, cli, provision

    provision(pki, "acme", "olga", Role.OPERATOR)
    code, out, err = await cli(
        enrolling, pki, "enrollments", "create", "--device", "hall-1", "--ttl", "2h", who="olga"
    )
    assert code == 0, err
    assert "hall-1" in out and "fleet CA fingerprint: SHA256:" in out and "audio-device enroll" in out
    fingerprint = out.split("fleet CA fingerprint: ", 1)[1].split()[0]
    the_code = next(word for word in out.split() if normalise(word) and len(word) == 19)
    code, out, err = await cli(
        enrolling, pki, "enrollments", "create", "--count", "3", "--prefix", "hall-x", "--csv", who="olga"
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["device"] for r in rows] == ["hall-x1", "hall-x2", "hall-x3"] and all(
        normalise(r["code"]) for r in rows
    )
    code, out, _ = await cli(enrolling, pki, "enrollments", "cancel", rows[0]["id"], who="olga")
    assert code == 0 and "acme/hall-x1" in out
    code, out, _ = await cli(enrolling, pki, "enrollments", "list", who="olga")
    assert (
        code == 0
        and "hall-x1" not in out
        and "hall-x2" in out
        and "4 pending" not in out
        and "3 pending" in out
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "device", "enroll", "--server", f"127.0.0.1:{enrolling.enroll_port}",
        "--server-name", "localhost", "--code", the_code.lower(), "--ca-fingerprint", fingerprint,
        "--pki-dir", str(tmp_path / "pi"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    out_b, err_b = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err_b.decode()
    assert "enrolled as acme/hall-1" in out_b.decode()
    key = tmp_path / "pi" / "devices" / "acme" / "hall-1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    process = await asyncio.create_subprocess_exec(  # the code is used: one line, exit 78
        sys.executable, "-m", "device", "enroll", "--server", f"127.0.0.1:{enrolling.enroll_port}",
        "--server-name", "localhost", "--code", the_code, "--ca", str(pki.root / "ca.crt"),
        "--pki-dir", str(tmp_path / "pi2"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    _, err_b = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78
    assert (
        err_b.decode().strip()
        == f"audio-device enroll: enrolment refused (UNAUTHENTICATED): {CODE_INVALID_TEXT}"
    )
    assert not (tmp_path / "pi2").exists()


async def test_enrolment_does_not_start_without_an_issuing_ca(
    pki: EphemeralPki, library: Any, tmp_path: Path
) -> None:
    from auth.errors import PkiError
    from server.app import start_server
    from tests.conftest import make_settings

    settings = make_settings(pki, tmp_path, enroll_bind="127.0.0.1:0", issuing_cert=tmp_path / "none.crt")
    with pytest.raises(PkiError, match=r"none\.crt"):
        await start_server(settings, library)


async def test_a_device_that_has_a_certificate_keeps_it_and_the_code(
    enrolling: AudioServer, admin: Admin, pki: EphemeralPki, tmp_path: Path
) -> None:
    first, pin = await code_for(enrolling, admin, "again")
    server = f"127.0.0.1:{enrolling.enroll_port}"
    done = await enrol(server, first, tmp_path, ca_fingerprint=pin, server_name="localhost")
    kept = done.key_path.read_bytes()
    second, _ = await code_for(enrolling, admin, "again")
    with pytest.raises(EnrolmentFailed, match="--force"):
        await enrol(server, second, tmp_path, ca_fingerprint=pin, server_name="localhost")
    assert done.key_path.read_bytes() == kept
    again = await enrol(server, second, tmp_path, ca_fingerprint=pin, server_name="localhost", force=True)
    assert again.key_path == done.key_path and again.key_path.read_bytes() != kept
    assert stat.S_IMODE(again.key_path.stat().st_mode) == 0o600


async def test_unparseable_bytes_are_invalid_argument_in_our_words(
    enrolling: AudioServer, pki: EphemeralPki, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no EnrollRequest: our words, INVALID_ARGUMENT, counted; no error or traceback
    in the log (before a device has a certificate, this is all an attacker can send)."""
    method = "/audio.enroll.v1.EnrollmentService/Enroll"
    before = sample("audio_bad_messages_total", method="Enroll")
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())
    async with grpc.aio.secure_channel(f"127.0.0.1:{enrolling.enroll_port}", creds) as channel:
        raw = channel.unary_unary(
            method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\xff\xff\xff\xff not protobuf", timeout=10)
    assert info.value.code() == INVALID
    assert info.value.details() == "request message could not be parsed"
    assert sample("audio_bad_messages_total", method="Enroll") == before + 1
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
