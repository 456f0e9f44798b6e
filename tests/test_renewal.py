"""Certificates that renew themselves, end to end: a real server (RenewalService on the mTLS
device port), the real Pi client (DeviceApp with mock pins and a recording sink), real TLS with
an ephemeral root and issuing CA, certificates living seconds so a device renews several times
in one test while a sound plays; the refusals (revoked, another identity, a reused key, bad
CSRs, no token, a token of another certificate), their metric and audit; the record on every
backend; an expired certificate's exit 78."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from gpiozero.pins.mock import MockFactory, MockPWMPin

from admin.cli import device_row, show_device
from auth import pki as pkilib
from auth.device_credentials import expired_text
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.issuing_ca import issue_for_key
from auth.revocation import revoke
from comms.gen import admin_pb2 as apb
from comms.gen import renew_pb2 as rpb
from comms.gen import renew_pb2_grpc as rpb_grpc
from comms.renewal_words import renewal_words
from device.app import DeviceApp
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from device.connection import LinkState
from device.exits import EXIT_PERMANENT
from device.renewal import CertificateFiles, RenewalFailed, RenewalPolicy, new_key_and_request, renew_at
from device.settings import DeviceSettings
from server.app import AudioServer
from server.audio.library import AudioLibrary
from server.state.memory_store import MemoryStore
from server.state.redis_store import RedisStore
from server.state.sqlite_store import SqliteStore
from server.state.store import Renewal
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import EphemeralPki, free_port, sample, skipped_packets, wait_for
from tests.redis_server import RedisServer
from tests.test_console import login_link
from tests.test_entrypoint import SRC

TD = DEFAULT_TRUST_DOMAIN
LIFETIME_S = 10  # the server's --device-cert-lifetime-s here: a renewal every few seconds
PLAY, MODE = 3, 1
BUTTON_PINS = [17, 27, 22, 23]


@pytest.fixture
async def renewing(server_factory: ServerFactory, pki: EphemeralPki) -> AudioServer:
    pki.issuing_ca()  # where the server looks (PKI_DIR/issuing)
    return await server_factory(device_cert_lifetime_s=LIFETIME_S)


def write_device(
    pki: EphemeralPki, root: Path, device: str, lifetime_s: float | None = LIFETIME_S
) -> CertificateFiles:
    """A device's files as enrolment leaves them (issuing-CA chain, ``lifetime_s``), or, with
    ``lifetime_s=None``, as ``gen_certs.py device`` does (root-issued, long-lived)."""
    cert_path, key_path = pkilib.device_paths(root, Identity("acme", device))
    if lifetime_s is None:
        material = pki.device("acme", device)
        key_pem, chain = material.key_pem(), material.cert_pem()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        issuing = pki.issuing_ca()
        leaf = issue_for_key(
            issuing, key.public_key(), Identity("acme", device), TD, dt.timedelta(seconds=lifetime_s)
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM) + issuing.cert_pem()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    pkilib.write_material(key_path, key_pem, pkilib.PRIVATE_MODE, force=True)
    pkilib.write_material(cert_path, chain, pkilib.PUBLIC_MODE, force=True)
    pkilib.write_material(root / pkilib.CA_CERT, pki.ca.cert_pem(), pkilib.PUBLIC_MODE, force=True)
    return CertificateFiles(cert_path, key_path, root / pkilib.CA_CERT)


@asynccontextmanager
async def pi(
    server: AudioServer, files: CertificateFiles, device: str, **overrides: Any
) -> AsyncIterator[tuple[DeviceApp, MockFactory, RecordingSink]]:
    factory = MockFactory(pin_class=MockPWMPin)
    settings = DeviceSettings(
        server=f"127.0.0.1:{server.port}",
        tenant="acme",
        device=device,
        cert=files.cert,
        key=files.key,
        ca=files.ca,
        **overrides,
    )
    sink = RecordingSink()
    app = DeviceApp(settings, files.load(TD), sink, pin_factory=factory)
    await app.start()
    try:
        yield app, factory, sink
    finally:
        await app.close()
        factory.reset()


async def tap(factory: MockFactory, button: int) -> None:
    pin = factory.pin(BUTTON_PINS[button])
    pin.drive_low()
    await wait_for(lambda: True)
    pin.drive_high()


def leaf_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


async def renew_audit(server: AudioServer, device: str) -> list[Any]:
    events, _ = await server.audit.list("acme", 1000)
    return [e for e in events if e.action == "Renew" and e.target == device]


def missing_from(received: list[bytes], sent: tuple[bytes, ...]) -> int:
    """How many of ``sent`` (from the first) are missing from ``received``, which must hold the
    rest in order, each once (a duplicate or a reordering fails)."""
    at = missing = 0
    for data in received:
        while at < len(sent) and sent[at] != data:
            at, missing = at + 1, missing + 1
        assert at < len(sent), "a packet arrived twice or out of order"
        at += 1
    return missing


async def test_a_device_renews_several_times_while_a_sound_plays_without_a_gap(
    renewing: AudioServer, pki: EphemeralPki, tmp_path: Path, library: AudioLibrary
) -> None:
    files = write_device(pki, tmp_path, "renew-1")
    first = leaf_of(files.cert)
    ok_before, skipped_before = sample("audio_renewals_total", result="ok"), skipped_packets()
    # Renew at a third of the 10 s lifetime (less up to 5 %): every ~3 s.
    async with pi(renewing, files, "renew-1", renew_fraction=0.3, renew_retry_s=0.5) as (app, factory, sink):
        received: list[bytes] = []  # every audio packet the device got, over whichever connection
        player_on_packet = app.player.on_packet

        def on_packet(packet: Any) -> None:
            received.append(packet.data)
            player_on_packet(packet)

        app.player.on_packet = on_packet  # type: ignore[method-assign]
        await wait_for(lambda: app.link == LinkState.CONNECTED)
        await tap(factory, MODE)  # mode 1: the 64 s melody
        await wait_for(lambda: app.manager is not None and app.manager.client is not None)
        identity = Identity("acme", "renew-1")

        def mode() -> int | None:
            controller = renewing.registry.controller(identity)
            return controller.state.mode if controller is not None else None

        await wait_for(lambda: mode() == 1)
        await tap(factory, PLAY)
        await wait_for(lambda: app.player.playing, timeout=3)
        assert app.renewer is not None and app.renewer.renewals == 0
        session = renewing.registry.controller(Identity("acme", "renew-1")).record.session_id  # type: ignore[union-attr]
        serials = {first.serial_number}
        for n in range(1, 4):
            await wait_for(lambda n=n: app.renewer is not None and app.renewer.renewals >= n, timeout=8)  # type: ignore[misc]
            serials.add(leaf_of(files.cert).serial_number)
        assert len(serials) == 4  # three new certificates, each with a new serial
        # The sound never stopped or restarted: one sound, still playing...
        assert app.player.playing and len(sink.sounds) == 1 and not sink.sounds[0].ended
        # ...and every packet of it arrived, once and in order, across the three hand-overs
        # (none missing but what the server's live edge skipped as late on a loaded machine).
        sent = library.clip_for(1).encoding(app.settings.max_frame_ms).packets
        assert len(received) > 2 * 1000 // app.settings.max_frame_ms  # seconds of sound, renewals in them
        assert missing_from(received, sent) == skipped_packets() - skipped_before
        count = len(received)
        await wait_for(lambda: len(received) > count + 5)  # and it keeps coming
        # The same session throughout: renewal re-binds it, it does not start a new one.
        record = renewing.registry.controller(Identity("acme", "renew-1")).record  # type: ignore[union-attr]
        assert record.session_id == session
        current = leaf_of(files.cert)
        assert record.cert_serial == current.serial_number
        assert record.cert_expires == current.not_valid_after_utc.timestamp()
        assert record.cert_issued == current.not_valid_before_utc.timestamp()
        assert record.renewed_at is not None and time.time() - record.renewed_at < 5
    # Every certificate came from the issuing CA, with exactly the device's identity.
    leaf, issuing = x509.load_pem_x509_certificates(files.cert.read_bytes())
    assert issuing == pki.issuing_ca().cert
    (san,) = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.value == Identity("acme", "renew-1").spiffe_id(TD)
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(seconds=LIFETIME_S) <= life <= dt.timedelta(seconds=LIFETIME_S * 1.1)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert not any(p.exists() for p in files.previous)  # the previous pair went once the new one connected
    assert sample("audio_renewals_total", result="ok") >= ok_before + 3
    audited = await renew_audit(renewing, "renew-1")
    assert len([e for e in audited if e.result == "OK"]) >= 3
    assert all(e.role == "device" and e.tenant == "acme" for e in audited)
    # The stored record (not only the live controller) carries the renewal.
    stored = await renewing.store.load(Identity("acme", "renew-1"))
    assert stored is not None and stored.renewed_at is not None and stored.cert_serial in serials


async def test_a_root_issued_device_renews_and_its_old_certificate_works_until_revoked(
    renewing: AudioServer, pki: EphemeralPki, tmp_path: Path, connect: Connect
) -> None:
    crl = pki.root / "crl.pem"
    files = write_device(pki, tmp_path, "old-way", lifetime_s=None)  # gen_certs.py device
    old_tls = pki.device_tls("acme", "old-way")
    async with pi(renewing, files, "old-way") as (app, _, _):
        await wait_for(lambda: app.manager is not None and app.manager.client is not None)
        assert app.manager is not None and app.renewer is not None
        await wait_for(lambda: app.manager.client is not None and app.manager.client.ready.is_set())
        await app.renewer.renew(app.manager, app.manager.client)  # not due for years: renew now
        leaf, issuing = x509.load_pem_x509_certificates(files.cert.read_bytes())
        assert issuing == pki.issuing_ca().cert  # it is an issuing-CA device now
        assert leaf.serial_number != pki.device("acme", "old-way").cert.serial_number
    # The old certificate was not revoked by renewing: it still connects...
    async with connect(renewing, "acme", "old-way", tls=old_tls) as old:
        assert old.session is not None
    # ...until an operator revokes it; the new one keeps working.
    revoke(pki.ca, crl, [pki.device("acme", "old-way").cert.serial_number])
    renewing.trust.reload_revocations()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with connect(renewing, "acme", "old-way", tls=old_tls):
            pass
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with connect(renewing, "acme", "old-way", tls=files.load(TD).tls) as new:
        assert new.session is not None


async def test_the_old_certificate_stops_at_its_expiry(
    renewing: AudioServer, pki: EphemeralPki, tmp_path: Path, connect: Connect
) -> None:
    files = write_device(pki, tmp_path, "short-1", lifetime_s=LIFETIME_S)
    old_tls = files.load(TD).tls
    async with connect(renewing, "acme", "short-1", tls=old_tls) as client:
        _key_pem, csr, _ = new_key_and_request()
        renewed = await client.renew(csr)
        assert renewed.session_id == client.session.session_id  # type: ignore[union-attr]
    async with connect(renewing, "acme", "short-1", tls=old_tls) as again:  # still valid
        assert again.session is not None
    await wait_for(lambda: time.time() > leaf_of(files.cert).not_valid_after_utc.timestamp(), timeout=12)
    with pytest.raises(grpc.aio.AioRpcError) as expired:  # the handshake refuses it
        async with connect(renewing, "acme", "short-1", tls=old_tls):
            pass
    assert expired.value.code() == grpc.StatusCode.UNAVAILABLE


def csr_for(key: Any, sans: list[x509.GeneralName] | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme/other")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_renewal_refuses_other_names_reused_keys_bad_csrs_and_foreign_tokens(
    renewing: AudioServer, pki: EphemeralPki, connect: Connect
) -> None:
    tls = pki.issued_tls("acme", "csr-1")
    own_key = serialization.load_pem_private_key(tls.key_pem, None)
    other = Identity("acme", "someone-else").spiffe_id(TD)
    cases = {  # what the CSR asks -> (code, result label, our words)
        "another identity": (
            csr_for(ec.generate_private_key(ec.SECP256R1()), [x509.UniformResourceIdentifier(other)]),
            grpc.StatusCode.PERMISSION_DENIED,
            "csr_foreign_name",
            "a renewal keeps this device's identity",
        ),
        "a DNS name too": (
            csr_for(ec.generate_private_key(ec.SECP256R1()), [x509.DNSName("evil.example")]),
            grpc.StatusCode.PERMISSION_DENIED,
            "csr_foreign_name",
            "evil.example",
        ),
        "the current key": (
            csr_for(own_key),
            grpc.StatusCode.INVALID_ARGUMENT,
            "csr_key_reused",
            "a renewal needs a new key",
        ),
        "an RSA key": (
            csr_for(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "csr_invalid",
            "EC P-256",
        ),
        "garbage": (b"\x30\x03\x02\x01\x00", grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid", "PKCS#10"),
    }
    async with connect(renewing, "acme", "csr-1", tls=tls) as client:
        before = await renewing.store.load(Identity("acme", "csr-1"))
        for what, (csr, code, label, words) in cases.items():
            counted = sample("audio_renewals_total", result=label)
            error = await refusal(client.renew(csr))
            assert (error.code(), what) == (code, what)
            assert words in (error.details() or ""), what
            assert sample("audio_renewals_total", result=label) == counted + 1, what
        # Nothing was issued: the record's certificate is the one it connected with.
        after = await renewing.store.load(Identity("acme", "csr-1"))
        assert before is not None and after is not None and after.cert_serial == before.cert_serial
        assert after.renewal_failure == "csr_invalid" and after.renewal_failed_at is not None
        # No session token: the certificate alone does not renew.
        assert client._channel is not None
        stub = rpb_grpc.RenewalServiceStub(client._channel)
        _, csr, _ = new_key_and_request()
        no_token = await refusal(stub.Renew(rpb.RenewRequest(csr=csr)))
        assert no_token.code() == grpc.StatusCode.UNAUTHENTICATED
        # Another device's token with this certificate (not issued to that identity): refused.
        async with connect(renewing, "acme", "csr-2", tls=pki.issued_tls("acme", "csr-2")) as other_client:
            assert other_client.session is not None
            foreign = (("authorization", f"Bearer {other_client.session.token}"),)
            mismatch = await refusal(stub.Renew(rpb.RenewRequest(csr=csr), metadata=foreign))
            assert mismatch.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            assert "Traceback" not in (mismatch.details() or "")
    audited = await renew_audit(renewing, "csr-1")
    reasons = {e.parameters.get("reason") for e in audited if e.result != "OK"}
    assert {"csr_foreign_name", "csr_key_reused", "csr_invalid"} <= reasons
    assert not [e for e in audited if e.result == "OK"]


async def test_renewal_is_refused_for_a_revoked_device(
    renewing: AudioServer, pki: EphemeralPki, connect: Connect, admin: Admin
) -> None:
    async with connect(renewing, "acme", "gone-1", tls=pki.issued_tls("acme", "gone-1")) as client:
        async with admin(renewing, "acme") as ops:
            await ops.RevokeDevice(apb.DeviceRef(device_id="gone-1"))
        await wait_for(lambda: client.closed.is_set())
        counted = sample("audio_renewals_total", result="device_revoked")
        _, csr, _ = new_key_and_request()
        error = await refusal(client.renew(csr))  # the channel is up; the session's token is not enough
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (error.details() or "")
    assert sample("audio_renewals_total", result="device_revoked") == counted + 1
    (refused,) = await renew_audit(renewing, "gone-1")
    assert refused.result == "PERMISSION_DENIED" and refused.parameters["reason"] == "device_revoked"
    async with admin(renewing, "acme") as ops:
        shown = await ops.GetDevice(apb.DeviceRef(device_id="gone-1"))
    assert shown.renewal.failure == "device_revoked" and shown.renewal.failed_at_unix > 0


def test_an_expired_certificate_says_so_in_one_line_and_exits_78(pki: EphemeralPki, tmp_path: Path) -> None:
    identity = Identity("acme", "expired-1")
    cert_path, key_path = pkilib.device_paths(tmp_path, identity)
    now = dt.datetime.now(dt.UTC)
    material = pkilib.issue_certificate(
        pki.ca,
        str(identity),
        [x509.UniformResourceIdentifier(identity.spiffe_id(TD))],
        server=False,
        not_before=now - dt.timedelta(days=31),
        not_after=now - dt.timedelta(days=1),
    )
    pkilib.write_material(key_path, material.key_pem(), pkilib.PRIVATE_MODE, force=True)
    pkilib.write_material(cert_path, material.cert_pem(), pkilib.PUBLIC_MODE, force=True)
    pkilib.write_material(tmp_path / pkilib.CA_CERT, pki.ca.cert_pem(), pkilib.PUBLIC_MODE, force=True)
    done = subprocess.run(  # the real entry point, as systemd starts it
        [
            sys.executable,
            "-m",
            "device",
            "--pki-dir",
            str(tmp_path),
            "--tenant",
            "acme",
            "--device",
            "expired-1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert done.returncode == EXIT_PERMANENT
    lines = done.stderr.strip().splitlines()
    assert lines == [f"audio-device: {expired_text(material.cert.not_valid_after_utc)}"]
    assert "cannot renew" in lines[0] and "new code" in lines[0]


async def test_a_certificate_that_expires_while_renewal_is_refused_stops_the_client(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path
) -> None:
    """No issuing CA on this server: every renewal is refused (UNAVAILABLE); at expiry the client
    stops by itself with the line (the entry point prints it and exits 78)."""
    server = await server_factory(pki_dir=pki.root, issuing_cert=tmp_path / "none.crt")
    files = write_device(pki, tmp_path, "doomed-1", lifetime_s=LIFETIME_S)
    counted = sample("audio_renewals_total", result="no_issuing_ca")
    async with pi(server, files, "doomed-1", renew_fraction=0.2, renew_retry_s=0.5) as (app, _, _):
        await wait_for(lambda: app.renewer is not None and app.renewer.failures >= 1, timeout=8)
        assert sample("audio_renewals_total", result="no_issuing_ca") > counted
        await wait_for(app.stopped.is_set, timeout=LIFETIME_S + 3)
        assert app.exit_line is not None and "cannot renew" in app.exit_line


def test_renewal_is_scheduled_at_two_thirds_less_the_jitter() -> None:
    policy = RenewalPolicy()
    assert renew_at(0.0, 30.0, policy, lambda: 0.0) == pytest.approx(20.0)
    earliest = renew_at(0.0, 30.0, policy, lambda: 1.0)
    assert earliest == pytest.approx(30.0 * (2 / 3 - 0.05))
    spread = {round(renew_at(0.0, 3000.0, policy, lambda i=i: i / 10), 3) for i in range(10)}
    assert len(spread) == 10 and all(earliest * 100 - 1e-6 <= s <= 2000.0 for s in spread)


async def test_a_renewal_cut_between_its_writes_falls_back_to_the_previous_pair(
    pki: EphemeralPki, tmp_path: Path
) -> None:
    files = write_device(pki, tmp_path, "cut-1")
    good = files.load(TD)
    key_pem, _, _ = new_key_and_request()
    prev_cert, prev_key = files.previous
    # As install() leaves it after the key write and before the certificate write:
    pkilib.write_material(prev_key, files.key.read_bytes(), pkilib.PRIVATE_MODE, force=True)
    pkilib.write_material(prev_cert, files.cert.read_bytes(), pkilib.PUBLIC_MODE, force=True)
    pkilib.write_material(files.key, key_pem, pkilib.PRIVATE_MODE, force=True)
    loaded = files.load(TD)
    assert loaded.tls.key_pem == good.tls.key_pem and loaded.tls.cert_pem == good.tls.cert_pem
    assert not prev_cert.exists() and not prev_key.exists()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_the_record_keeps_renewals_on_every_backend(
    backend: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    identity = Identity("acme", "rec-1")
    if backend == "memory":
        store: Any = MemoryStore()
    elif backend == "sqlite":
        store = await SqliteStore.open(tmp_path / "s.sqlite3")
    else:
        store = await RedisStore.open(redis_server.url)
    try:
        await store.claim_session(identity, "s1", {"cert_serial": 1, "cert_expires": 100.0})
        assert await store.record_renewal_failure(identity, "csr_invalid", 150.0)
        assert await store.record_renewal(identity, Renewal(0xABC, 200.0, 300.0, 201.0))
        record = await store.load(identity)
        assert (record.cert_serial, record.cert_issued, record.cert_expires, record.renewed_at) == (
            0xABC,
            200.0,
            300.0,
            201.0,
        )
        assert (record.renewal_failed_at, record.renewal_failure) == (150.0, "csr_invalid")
        assert record.session_id == "s1" and record.epoch == 1  # the session is untouched
    finally:
        await store.close()


def test_renewal_in_words() -> None:
    now = 1_000_000.0
    fine = apb.DeviceRenewal(renews_in_days=12, renew_due_unix=now + 12.5 * 86_400)
    assert renewal_words(fine, now) == ("renews in 12 days", False)
    assert renewal_words(apb.DeviceRenewal(renews_in_days=1), now) == ("renews in 1 day", False)
    assert renewal_words(apb.DeviceRenewal(renews_in_days=0), now) == ("renews within a day", False)
    overdue = apb.DeviceRenewal(renews_in_days=-2, overdue=True)
    assert renewal_words(overdue, now) == ("past two thirds of its lifetime without renewing", True)
    failed = apb.DeviceRenewal(renews_in_days=3, failure="csr_invalid", failed_at_unix=now - 7200)
    assert renewal_words(failed, now) == ("renewal failed (csr_invalid) 2 h ago", True)


async def test_operators_see_when_a_device_renews_and_which_need_a_look(
    server_factory: ServerFactory,
    pki: EphemeralPki,
    tmp_path: Path,
    connect: Connect,
    admin: Admin,
    http: aiohttp.ClientSession,
) -> None:
    pki.issuing_ca()
    server = await server_factory(console_bind="127.0.0.1:0")
    month = write_device(pki, tmp_path / "a", "month-1", lifetime_s=30 * 86_400).load(TD)
    now = dt.datetime.now(dt.UTC)
    identity = Identity("acme", "late-1")
    late = pkilib.issue_certificate(  # 25 of its 30 days gone, never renewed
        pki.ca,
        str(identity),
        [x509.UniformResourceIdentifier(identity.spiffe_id(TD))],
        server=False,
        not_before=now - dt.timedelta(days=25),
        not_after=now + dt.timedelta(days=5),
    )
    async with (
        connect(server, "acme", "month-1", tls=month.tls) as client,
        connect(server, "acme", "late-1", tls=pki.tls(late)),
    ):
        async with admin(server, "acme", role="viewer") as ops:
            shown = show_device(await ops.GetDevice(apb.DeviceRef(device_id="month-1")))
            assert "renewal          renews in 19 days" in shown, shown
            overdue = show_device(await ops.GetDevice(apb.DeviceRef(device_id="late-1")))
            assert "past two thirds of its lifetime without renewing (!)" in overdue, overdue
        await refusal(client.renew(b"not a csr"))
        async with admin(server, "acme", role="viewer") as ops:
            device = await ops.GetDevice(apb.DeviceRef(device_id="month-1"))
        assert "renewal failed (csr_invalid) 0 min ago (!)" in show_device(device)
        assert "(renewal!)" in device_row(device, False)[7]
        link = await login_link(server, pki, "acme", "viewer", "vic")
        async with http.get(link, ssl=False) as response:
            assert response.status == 200
        base = f"https://127.0.0.1:{server.console_port}"
        async with http.get(f"{base}/devices/acme/month-1", ssl=False) as response:
            page = await response.text()
        assert '<span data-field="renewal" class="warn">renewal failed (csr_invalid)' in page
        async with http.get(f"{base}/devices/acme/late-1", ssl=False) as response:
            page = await response.text()
        assert "past two thirds of its lifetime without renewing" in page


async def test_a_new_pair_that_does_not_connect_puts_the_previous_one_back(
    renewing: AudioServer, pki: EphemeralPki, tmp_path: Path
) -> None:
    files = write_device(pki, tmp_path, "nohand-1", lifetime_s=None)
    before = files.cert.read_bytes(), files.key.read_bytes()
    async with pi(renewing, files, "nohand-1") as (app, _, _):
        assert app.manager is not None and app.renewer is not None
        manager, renewer = app.manager, app.renewer
        await wait_for(lambda: manager.client is not None and manager.client.ready.is_set())
        live = manager.client
        assert live is not None

        def unreachable(credentials: Any, session: Any) -> DeviceClient:  # the new pair never connects
            return DeviceClient(f"127.0.0.1:{free_port()}", credentials.tls, RecordingSink(), resume=session)

        renewer._make_client = unreachable
        with pytest.raises(RenewalFailed, match="did not connect"):
            await renewer.renew(manager, live)
        assert (files.cert.read_bytes(), files.key.read_bytes()) == before  # the previous pair is back
        assert not any(p.exists() for p in files.previous)
        assert manager.client is live and not live.closed.is_set()  # still on the old connection
        assert app.link == LinkState.CONNECTED
