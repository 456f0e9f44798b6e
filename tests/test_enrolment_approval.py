"""Open enrolment with approval, end to end: a real server (its server-only TLS enrolment listener
and the operator API), the real device side (``audio-device enroll --claim``), real TLS. A device
queues a request with its tenant's claim code and waits; an operator approves it (the identity is
the approval's, never the CSR's) or denies it; requests are capped per tenant, claims limited per
address, requests of another tenant invisible, certificates collected only with the key; all
audited and counted."""

from __future__ import annotations

import asyncio
import stat
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from auth import poll_proof
from auth.device_credentials import load_device_credentials
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import Role
from comms.gen import admin_pb2 as apb
from comms.gen import enroll_pb2 as epb
from comms.gen import enroll_pb2_grpc as epb_grpc
from device.enrol import ClaimAs, EnrolmentFailed, enrol, new_request
from server.app import AudioServer
from server.enrolment.claims import (
    CLAIM_INVALID_TEXT,
    CLAIMS_LIMITED_TEXT,
    DENIED_TEXT,
    PENDING_FULL_TEXT,
    PROOF_INVALID_TEXT,
    REQUEST_EXPIRED_TEXT,
    REQUEST_UNKNOWN_TEXT,
)
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, sample, wait_for
from tests.test_enrolment import audit_of, csr_with, refusal

TD = DEFAULT_TRUST_DOMAIN
FAST = {"enroll_bind": "127.0.0.1:0", "enroll_poll_interval_s": 0.1}


@pytest.fixture
async def open_enrolling(server_factory: ServerFactory, pki: EphemeralPki) -> AudioServer:
    pki.issuing_ca()
    return await server_factory(**FAST)


async def claim_code(app: AudioServer, admin: Admin, tenant: str = "acme") -> apb.ClaimCode:
    async with admin(app, tenant, role="admin", name="boss") as boss:
        return await boss.SetClaimCode(apb.ClaimCodeRequest())


async def pending(app: AudioServer, admin: Admin, tenant: str | None = "acme") -> list[apb.PendingEnrollment]:
    async with admin(app, tenant, role="operator", name="olga") as ops:
        return list((await ops.ListPendingEnrollments(apb.ClaimCodeRequest())).requests)


async def until_pending(app: AudioServer, admin: Admin, count: int = 1) -> list[apb.PendingEnrollment]:
    deadline = time.monotonic() + 10
    while len(found := await pending(app, admin)) < count:
        assert time.monotonic() < deadline, "the request never showed up as pending"
        await asyncio.sleep(0.02)
    return found


async def decide(app: AudioServer, admin: Admin, method: str, tenant: str = "acme", **request: Any) -> Any:
    async with admin(app, tenant, role="operator", name="olga") as ops:
        return await getattr(ops, method)(apb.DecideEnrollmentRequest(**request))


async def _stub_call(app: AudioServer, pki: EphemeralPki, method: str, message: Any) -> Any:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.enroll_port}", creds) as channel:
        return await getattr(epb_grpc.EnrollmentServiceStub(channel), method)(message, timeout=10)


def claim_call(app: AudioServer, pki: EphemeralPki, code: str, csr: bytes, proposed: str = "new-1") -> Any:
    request = epb.ClaimRequest(claim_code=code, csr=csr, proposed_device_id=proposed)
    return _stub_call(app, pki, "Claim", request)


def poll_call(app: AudioServer, pki: EphemeralPki, request_id: str, signature: bytes) -> Any:
    return _stub_call(app, pki, "Poll", epb.PollRequest(request_id=request_id, signature=signature))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- end to end ------------------------------------------------------------------------------------


async def test_a_device_claims_waits_is_approved_under_another_id_and_connects(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin, connect: Connect, tmp_path: Path
) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    assert claim.enabled and claim.code and claim.ca_fingerprint.startswith("SHA256:")
    before = {r: sample("audio_enrolments_total", result=r) for r in ("pending", "ok")}
    said: list[str] = []
    device = asyncio.create_task(
        enrol(
            f"127.0.0.1:{app.enroll_port}",
            claim.code,
            tmp_path / "pi",
            ca_fingerprint=claim.ca_fingerprint,
            server_name="localhost",
            claim=ClaimAs("proposed-1", announce=said.append),
        )
    )
    (request,) = await until_pending(app, admin)
    assert (request.tenant, request.proposed_device_id, request.state) == ("acme", "proposed-1", "pending")
    assert request.peer == "ipv4:127.0.0.1" and request.expires_unix > time.time() + 3600
    assert request.key_fingerprint in said[0] and request.id in said[0]  # what the operator compares
    assert not request.proposed_id_known
    assert not device.done()  # waiting for the decision
    approved = await decide(app, admin, "ApproveEnrollment", id=request.id, device_id="kitchen-7")
    assert (approved.state, approved.device_id) == ("approved", "kitchen-7")
    done = await asyncio.wait_for(device, 10)
    assert done.identity == Identity("acme", "kitchen-7")  # the approval's id, not the proposed one
    assert stat.S_IMODE(done.key_path.stat().st_mode) == 0o600
    leaf, issuing = x509.load_pem_x509_certificates(done.cert_path.read_bytes())
    assert issuing == pki.issuing_ca().cert
    assert poll_proof.key_fingerprint(leaf.public_key()) == request.key_fingerprint  # type: ignore[arg-type]
    credentials = load_device_credentials(done.cert_path, done.key_path, done.ca_path, TD)
    async with connect(app, "acme", "kitchen-7", tls=credentials.tls) as client:
        await client.press(MODE)
        await wait_for(lambda: mode_of(client.view.leds) == 1)
    assert not await pending(app, admin)  # collected: gone from the list
    assert sample("audio_enrolments_total", result="pending") == before["pending"] + 1
    assert sample("audio_enrolments_total", result="ok") == before["ok"] + 1
    (claimed,) = await audit_of(app, "acme", "Claim")
    assert claimed.result == "OK" and claimed.target == "proposed-1" and claimed.role == "device"
    assert claimed.parameters["request"] == request.id and claimed.parameters["claim_code"] == claim.id
    (decided,) = await audit_of(app, "acme", "ApproveEnrollment")
    assert decided.result == "OK" and decided.target == "kitchen-7"
    assert decided.parameters["fingerprint"] == request.key_fingerprint
    (collected,) = await audit_of(app, "acme", "Poll")
    assert collected.result == "OK" and collected.target == "kitchen-7"
    assert collected.parameters["serial"] == f"{leaf.serial_number:x}"
    (made,) = await audit_of(app, "acme", "SetClaimCode")
    everything = str(await app.audit.list(None, 1000))  # type: ignore[union-attr]
    assert made.result == "OK" and claim.code not in everything  # the code is never kept


async def test_a_denied_device_is_told_so_and_keeps_nothing(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin, tmp_path: Path
) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    device = asyncio.create_task(
        enrol(
            f"127.0.0.1:{app.enroll_port}",
            claim.code,
            tmp_path / "pi",
            ca_file=pki.root / "ca.crt",
            server_name="localhost",
            claim=ClaimAs("intruder", announce=lambda _: None),
        )
    )
    (request,) = await until_pending(app, admin)
    denied = await decide(app, admin, "DenyEnrollment", id=request.id)
    assert denied.state == "denied"
    with pytest.raises(EnrolmentFailed) as info:
        await asyncio.wait_for(device, 10)
    assert str(info.value) == f"enrolment request {request.id}: {DENIED_TEXT}"
    assert not list(tmp_path.rglob("*.key")) and not list(tmp_path.rglob("*.crt"))
    assert not await pending(app, admin)  # the device learnt it: gone
    (told,) = await audit_of(app, "acme", "Poll")
    assert told.result == "PERMISSION_DENIED" and told.parameters["reason"] == "denied"
    (deny,) = await audit_of(app, "acme", "DenyEnrollment")
    assert deny.result == "OK" and deny.target == "intruder"
    error = await refusal(decide(app, admin, "ApproveEnrollment", id=request.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_the_identity_is_the_claim_codes_tenant_and_the_approval_never_the_csr(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    key = new_key()
    greedy = csr_with(key, [x509.UniformResourceIdentifier(Identity("globex", "admin").spiffe_id(TD))])
    claimed = await claim_call(app, pki, claim.code, greedy, proposed="hall-3")
    assert claimed.tenant == "acme" and claimed.key_fingerprint == poll_proof.key_fingerprint(
        key.public_key()
    )
    signature = poll_proof.sign(key, claimed.request_id)
    waiting = await poll_call(app, pki, claimed.request_id, signature)
    assert waiting.state == epb.PollResponse.PENDING and waiting.retry_after_s == pytest.approx(0.1)
    await decide(app, admin, "ApproveEnrollment", id=claimed.request_id)  # no id given: the proposed one
    issued = (await poll_call(app, pki, claimed.request_id, signature)).issued
    leaf = x509.load_pem_x509_certificates(issued.certificate_chain)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(Identity("acme", "hall-3").spiffe_id(TD))]
    assert (issued.tenant, issued.device_id) == ("acme", "hall-3")
    again = await refusal(poll_call(app, pki, claimed.request_id, signature))  # one certificate per approval
    assert (again.code(), again.details()) == (grpc.StatusCode.NOT_FOUND, REQUEST_UNKNOWN_TEXT)


# --- who may collect, see and decide ------------------------------------------------------------------


async def test_a_poll_without_the_key_cannot_collect(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    key = new_key()
    claimed = await claim_call(app, pki, claim.code, new_request(key))
    await decide(app, admin, "ApproveEnrollment", id=claimed.request_id)
    thief = new_key()  # knows the request id (operators see it), not the key
    for signature in (poll_proof.sign(thief, claimed.request_id), b"", b"\x30" * 5000):
        error = await refusal(poll_call(app, pki, claimed.request_id, signature))
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, PROOF_INVALID_TEXT)
    replayed = poll_proof.sign(key, "0123456789abcdef")  # the key's signature of another request
    error = await refusal(poll_call(app, pki, claimed.request_id, replayed))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    unknown = await refusal(poll_call(app, pki, "0123456789abcdef", replayed))
    assert (unknown.code(), unknown.details()) == (grpc.StatusCode.NOT_FOUND, REQUEST_UNKNOWN_TEXT)
    refused = [e for e in await audit_of(app, "acme", "Poll") if e.result != "OK"]
    assert [e.parameters["reason"] for e in refused] == ["proof_invalid"] * 4
    issued = await poll_call(app, pki, claimed.request_id, poll_proof.sign(key, claimed.request_id))
    assert issued.state == epb.PollResponse.ISSUED  # the holder of the key still collects it


async def test_another_tenants_operator_cannot_see_or_decide_a_request(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    claimed = await claim_call(app, pki, claim.code, new_request(new_key()))
    async with admin(app, "globex", role="admin", name="gina") as globex:
        assert not (await globex.ListPendingEnrollments(apb.ClaimCodeRequest())).requests
        for tenant in ("", "acme"):
            for method in ("ApproveEnrollment", "DenyEnrollment"):
                call = getattr(globex, method)(
                    apb.DecideEnrollmentRequest(tenant=tenant, id=claimed.request_id)
                )
                assert (await refusal(call)).code() == grpc.StatusCode.NOT_FOUND, (tenant, method)
        assert not (await globex.GetClaimCode(apb.ClaimCodeRequest())).enabled
        error = await refusal(globex.GetClaimCode(apb.ClaimCodeRequest(tenant="acme")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    (still,) = await pending(app, admin)
    assert still.state == "pending"
    everyone = await pending(app, admin, tenant=None)  # a platform operator sees every tenant's
    assert [(r.tenant, r.id) for r in everyone] == [("acme", claimed.request_id)]


async def test_roles_claim_code_admin_decisions_operator_viewer_neither(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin, connect: Connect
) -> None:
    app = open_enrolling
    async with admin(app, "acme", role="operator", name="olga") as ops:
        error = await refusal(ops.SetClaimCode(apb.ClaimCodeRequest()))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert not (await ops.GetClaimCode(apb.ClaimCodeRequest())).enabled
    claim = await claim_code(app, admin)
    async with admin(app, "acme", role="viewer", name="vic") as viewer:
        for call in (
            viewer.ListPendingEnrollments(apb.ClaimCodeRequest()),
            viewer.ApproveEnrollment(apb.DecideEnrollmentRequest(id="0123456789abcdef")),
            viewer.DisableClaimCode(apb.ClaimCodeRequest()),
        ):
            assert (await refusal(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    claimed = await claim_call(app, pki, claim.code, new_request(new_key()), proposed="dev-1")
    async with connect(app, "acme", "dev-1"):
        pass
    (listed,) = await pending(app, admin)
    assert listed.proposed_id_known  # a proposed id already in the fleet is flagged
    async with admin(app, "acme", role="admin") as boss:
        await boss.RevokeDevice(apb.DeviceRef(device_id="dev-1"))
    error = await refusal(decide(app, admin, "ApproveEnrollment", id=claimed.request_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "revoked" in (error.details() or "")
    await decide(app, admin, "ApproveEnrollment", id=claimed.request_id, device_id="dev-2")
    error = await refusal(decide(app, admin, "DenyEnrollment", id=claimed.request_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "approved already" in (
        error.details() or ""
    )


async def test_a_rotated_or_disabled_claim_code_queues_nothing(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    app = open_enrolling
    first = await claim_code(app, admin)
    second = await claim_code(app, admin)  # rotate: a new code, the old one stops working
    assert second.id != first.id and second.code != first.code
    csr = new_request(new_key())
    error = await refusal(claim_call(app, pki, first.code, csr))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, CLAIM_INVALID_TEXT)
    assert (await claim_call(app, pki, second.code, csr)).tenant == "acme"
    async with admin(app, "acme", role="admin", name="boss") as boss:
        shown = await boss.GetClaimCode(apb.ClaimCodeRequest())
        assert shown.enabled and shown.id == second.id and not shown.code  # shown once, never again
        assert not (await boss.DisableClaimCode(apb.ClaimCodeRequest())).enabled
        assert (
            await refusal(boss.DisableClaimCode(apb.ClaimCodeRequest()))
        ).code() == grpc.StatusCode.NOT_FOUND
    error = await refusal(claim_call(app, pki, second.code, csr))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, CLAIM_INVALID_TEXT)
    assert len(await pending(app, admin)) == 1  # what was queued before stays for a decision
    reasons = [e.parameters["reason"] for e in await audit_of(app, "acme", "Claim") if e.result != "OK"]
    assert reasons == []  # an unknown code names no tenant: audited without one
    unknown = [e for e in await audit_of(app, None, "Claim") if e.result == "UNAUTHENTICATED"]
    assert [e.parameters["reason"] for e in unknown] == ["claim_invalid"] * 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("claim_code", "nope", "XXXX-XXXX-XXXX-XXXX"),
        ("proposed_device_id", "Not An Id", "proposed device id"),
        ("proposed_device_id", "x" * 5000, "proposed device id"),
        ("csr", b"\x30\x03\x02\x01\x00", "not a PKCS#10"),
    ],
)
async def test_a_malformed_claim_is_invalid_argument_in_our_words(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin, field: str, value: Any, words: str
) -> None:
    claim = await claim_code(open_enrolling, admin)
    request = {
        "claim_code": claim.code,
        "csr": new_request(new_key()),
        "proposed_device_id": "ok-1",
        field: value,
    }
    error = await refusal(_stub_call(open_enrolling, pki, "Claim", epb.ClaimRequest(**request)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (error.details() or "")
    assert "Traceback" not in (error.details() or "")
    assert not await pending(open_enrolling, admin)


# --- limits ----------------------------------------------------------------------------------------


async def test_pending_requests_are_capped_per_tenant(
    server_factory: ServerFactory, pki: EphemeralPki, admin: Admin
) -> None:
    pki.issuing_ca()
    app = await server_factory(**FAST, enroll_pending_per_tenant=2, enroll_claims_per_min=100)
    acme, globex = await claim_code(app, admin), await claim_code(app, admin, "globex")
    for n in range(2):
        await claim_call(app, pki, acme.code, new_request(new_key()), proposed=f"a-{n}")
    error = await refusal(claim_call(app, pki, acme.code, new_request(new_key()), proposed="a-2"))
    assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, PENDING_FULL_TEXT)
    assert (await claim_call(app, pki, globex.code, new_request(new_key()))).tenant == "globex"  # its own cap
    full = [e for e in await audit_of(app, "acme", "Claim") if e.result != "OK"]
    assert [(e.parameters["reason"], e.target) for e in full] == [("pending_full", "a-2")]
    assert [r.proposed_device_id for r in await pending(app, admin)] == ["a-0", "a-1"]
    first = (await pending(app, admin))[0]
    await decide(app, admin, "DenyEnrollment", id=first.id)  # decided but not collected: still counts
    assert (await refusal(claim_call(app, pki, acme.code, new_request(new_key())))).code() == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


async def test_claims_are_rate_limited_per_address_and_the_flood_audited_once(
    server_factory: ServerFactory, pki: EphemeralPki, admin: Admin
) -> None:
    pki.issuing_ca()
    app = await server_factory(**FAST, enroll_claims_per_min=2)
    claim = await claim_code(app, admin)
    before = sample("audio_enrolments_total", result="claims_rate_limited")
    for n in range(2):
        await claim_call(app, pki, claim.code, new_request(new_key()), proposed=f"r-{n}")
    for _ in range(3):
        error = await refusal(claim_call(app, pki, claim.code, new_request(new_key())))
        assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, CLAIMS_LIMITED_TEXT)
    assert sample("audio_enrolments_total", result="claims_rate_limited") == before + 3
    events = await audit_of(app, "acme", "Claim")
    assert sorted((e.result, e.parameters.get("reason", "")) for e in events) == [
        ("OK", ""),
        ("OK", ""),
        ("RESOURCE_EXHAUSTED", "claims_rate_limited"),  # once, when the address was blocked
    ]
    assert len(await pending(app, admin)) == 2


async def test_stale_requests_expire(open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin) -> None:
    app = open_enrolling
    claim = await claim_code(app, admin)
    key = new_key()
    stale = await claim_call(app, pki, claim.code, new_request(key), proposed="late-1")
    other = await claim_call(app, pki, claim.code, new_request(new_key()), proposed="late-2")
    assert app.enrolment_requests is not None
    app.enrolment_requests._clock = lambda: time.time() + 86_400 + 1  # past the default day
    error = await refusal(poll_call(app, pki, stale.request_id, poll_proof.sign(key, stale.request_id)))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, REQUEST_EXPIRED_TEXT)
    error = await refusal(decide(app, admin, "ApproveEnrollment", id=other.request_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # too late to decide
    assert not await pending(app, admin)  # listing prunes what expired
    assert app.enrolment_requests is not None
    assert await app.enrolment_requests.get(other.request_id) is None


# --- the operator's CLI and the device's command ----------------------------------------------------


async def test_the_cli_enables_lists_and_approves_while_the_device_command_waits(
    open_enrolling: AudioServer, pki: EphemeralPki, admin: Admin, tmp_path: Path
) -> None:
    from tests.test_admin_cli import ENV, cli, provision

    app = open_enrolling
    provision(pki, "acme", "alice", Role.ADMIN)
    provision(pki, "acme", "olga", Role.OPERATOR)
    code, out, err = await cli(app, pki, "enrollments", "claim", "enable", who="olga")
    assert code == 1 and "admin" in err  # an operator may not open enrolment
    code, out, err = await cli(app, pki, "enrollments", "claim", "enable", who="alice")
    assert code == 0, err
    the_code = out.split("claim code: ", 1)[1].split()[0]
    fingerprint = out.split("fleet CA fingerprint: ", 1)[1].split()[0]
    assert "--claim" in out and "shown only now" in out
    code, out, _ = await cli(app, pki, "enrollments", "claim", "show", who="olga")
    assert code == 0 and "claim code " in out and the_code not in out
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "device", "enroll", "--server", f"127.0.0.1:{app.enroll_port}",
        "--server-name", "localhost", "--claim", the_code, "--device-id", "porch-9",
        "--ca-fingerprint", fingerprint, "--pki-dir", str(tmp_path / "pi"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert process.stdout is not None
    waiting = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    assert "waiting for an operator's approval" in waiting
    (request,) = await until_pending(app, admin)
    assert request.key_fingerprint in waiting
    code, out, _ = await cli(app, pki, "enrollments", "pending", who="olga")
    assert code == 0 and request.id in out and "acme/porch-9" in out and "1 requests" in out
    code, out, err = await cli(
        app, pki, "enrollments", "approve", request.id, "--device-id", "porch-1", who="olga"
    )
    assert code == 0 and "acme/porch-1" in out, err
    rest, err_b = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err_b.decode()
    assert "enrolled as acme/porch-1" in rest.decode()
    key = tmp_path / "pi" / "devices" / "acme" / "porch-1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, out, _ = await cli(app, pki, "enrollments", "claim", "disable", who="alice")
    assert code == 0 and "off" in out


async def test_a_device_command_with_claim_needs_a_proposed_id() -> None:
    from device.enrol import main

    with pytest.raises(SystemExit) as info:
        main(["--server", "h:1", "--claim", "AAAA-AAAA-AAAA-AAAA", "--ca-fingerprint", "SHA256:" + "ab" * 32])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--server", "h:1", "--code", "AAAA-AAAA-AAAA-AAAA", "--device-id", "x", "--ca", "ca.crt"])


@pytest.mark.parametrize("method", ["Claim", "Poll"])
async def test_unparseable_bytes_on_claim_and_poll_are_invalid_argument_in_our_words(
    open_enrolling: AudioServer, pki: EphemeralPki, method: str
) -> None:
    before = sample("audio_bad_messages_total", method=method)
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem())
    async with grpc.aio.secure_channel(f"127.0.0.1:{open_enrolling.enroll_port}", creds) as channel:
        raw = channel.unary_unary(
            f"/audio.enroll.v1.EnrollmentService/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        error = await refusal(raw(b"\xff\xff\xff\xff not protobuf", timeout=10))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "request message could not be parsed",
    )
    assert sample("audio_bad_messages_total", method=method) == before + 1
