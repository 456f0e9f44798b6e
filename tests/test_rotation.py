"""Certificate rotation reaches every listener: after a new server certificate and a new CA bundle,
the device, operator and console ports all present the new certificate and admit clients of the
new CA; operator connections are never counted as failed handshakes."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from admin.client import FleetClient
from auth import pki as pki_lib
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from comms.gen import admin_pb2 as apb
from server.app import AudioServer
from server.runtime.watch import signature
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, reload_attempt, sample, wait_for
from tests.test_ops import server_cert_serial
from tests.test_security import FAST_RELOAD, create_session


def console_serial(port: int) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


async def test_every_listener_follows_a_new_server_certificate_and_ca(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    own = tmp_path / "pki"
    shutil.copytree(pki.root, own)
    app = await server_factory(pki_dir=own, console_bind="127.0.0.1:0", reload_interval_s=FAST_RELOAD)
    new_ca = pki_lib.create_ca("Audio Fleet CA 2")
    server = pki_lib.issue_server_cert(new_ca, ["localhost"], ["127.0.0.1"])
    device = pki_lib.issue_device_cert(new_ca, Identity("acme", "reissued"), DEFAULT_TRUST_DOMAIN)
    operator = pki_lib.issue_operator_cert(
        new_ca, OperatorIdentity("ops", Role.ADMIN, "acme"), DEFAULT_TRUST_DOMAIN
    )
    device_tls = TlsMaterial(device.cert_pem(), device.key_pem(), new_ca.cert_pem())
    operator_tls = TlsMaterial(operator.cert_pem(), operator.key_pem(), new_ca.cert_pem())

    def rotate() -> None:
        pki_lib.write_certified_key(server, own / "server.crt", own / "server.key", force=True)
        (own / "ca.crt").write_bytes(new_ca.cert_pem())  # the new CA only: the old fleet is out

    (watcher,) = [w for w in app.watchers if w.name == "server-tls"]
    await reload_attempt(app.watchers, "server-tls", rotate, ok=True)
    await wait_for(lambda: watcher.last_ok is True and signature(watcher._paths) == watcher._last)
    work = tmp_path / "probe"
    work.mkdir()
    presented = {
        "device": await asyncio.to_thread(server_cert_serial, app.port, device_tls, work),
        "operator": await asyncio.to_thread(server_cert_serial, app.admin_port, operator_tls, work),
        "console": await asyncio.to_thread(console_serial, app.console_port),
    }
    assert presented == dict.fromkeys(presented, server.cert.serial_number)
    async with connect(app, "acme", "reissued", tls=device_tls) as client:  # a device of the new CA
        await client.press(MODE)
        assert not client.ends
    async with FleetClient(f"127.0.0.1:{app.admin_port}", operator_tls) as fleet:  # an operator too
        listed = await fleet.stub.ListDevices(apb.ListDevicesRequest())
        assert "reissued" in {d.device_id for d in listed.devices}
    old_fleet = TlsMaterial(
        pki.device("acme", "old").cert_pem(), pki.device("acme", "old").key_pem(), new_ca.cert_pem()
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the old CA's devices are refused now
        await asyncio.wait_for(create_session(app.port, old_fleet), 10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_operator_connections_are_not_failed_handshakes(
    server: AudioServer, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    server.handshakes.check()  # start from a clean window
    failed_before = sample("audio_tls_handshakes_total", outcome="failed")
    for _ in range(3):  # three operator connections, each with a call
        async with admin(server, "acme") as stub:
            await stub.ListDevices(apb.ListDevicesRequest())
    assert server.handshakes.check() == 0
    assert sample("audio_tls_handshakes_total", outcome="failed") == failed_before
    assert "tls.handshakes_failed" not in [r.getMessage() for r in caplog.records]
    assert server.handshakes.used >= 3  # they were seen, as connections that made a call
