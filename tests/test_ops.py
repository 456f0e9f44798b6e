"""Operations: health on its own plaintext port, metrics, reflection, hot TLS rotation."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth import pki as pki_lib
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from server.app import AudioServer
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, PLAY, EphemeralPki, reload_attempt, wait_for

FAST_RELOAD = 0.05
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def health_status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(response.status)


async def test_health_is_plaintext_and_serves_nothing_else(server: AudioServer) -> None:
    assert server.health is not None
    port = server.health.port
    assert await health_status(port) == SERVING
    assert await health_status(port, "com.opalcamera.test.DeviceService") == SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(pb.AudioStreamRequest(start=True))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # And the device port does not speak plaintext.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_readiness_goes_not_serving_while_draining(
    server_factory: ServerFactory, connect: Connect
) -> None:
    app = await server_factory(drain_delay_s=1.0)
    assert app.health is not None
    port = app.health.port
    async with connect(app, "acme", "drained") as client:
        stopping = asyncio.create_task(app.stop(grace_s=2.0))
        await wait_for(lambda: not app.readiness.serving)
        assert await health_status(port) == NOT_SERVING
        await client.press(MODE)  # still served during the drain delay
        assert not client.ends
        await stopping
        await wait_for(lambda: len(client.ends) == 3)
        assert {end.code for end in client.ends.values()} == {grpc.StatusCode.UNAVAILABLE}


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


DOCUMENTED_METRICS = [
    "audio_connected_devices",
    "audio_open_streams",
    "audio_sessions_created_total",
    "audio_sessions_opened_total",
    "audio_sessions_superseded_total",
    "audio_auth_failures_total",
    "audio_button_events_total",
    "audio_events_rate_limited_total",
    "audio_sounds_started_total",
    "audio_sounds_stopped_total",
    "audio_packets_sent_total",
    "audio_packets_dropped_total",
    "audio_late_packets_total",
    "audio_status_errors_total",
]


async def test_metrics_are_exposed_and_move_with_traffic(
    server_factory: ServerFactory, connect: Connect
) -> None:
    app = await server_factory(metrics_bind="127.0.0.1:0")
    assert app.metrics is not None
    before = scrape(app.metrics.port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{app.metrics.port}/metrics").read().decode()
    for name in DOCUMENTED_METRICS:
        assert f"# HELP {name} " in text, name
    reference = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "metrics.md").read_text()
    for name in DOCUMENTED_METRICS:
        assert f"`{name}" in reference, f"{name} is not documented in docs/reference/metrics.md"
    async with connect(app, "metrics", "dev-1") as client:
        await client.press(MODE)
        await client.press(PLAY)
        await wait_for(lambda: client.packets_received > 5)
        during = scrape(app.metrics.port)
        assert during['audio_connected_devices{tenant="metrics"}'] == 1
        assert during['audio_open_streams{kind="audio"}'] >= 1
    after = scrape(app.metrics.port)

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert delta('audio_sessions_created_total{kind="new"}') >= 1
    assert delta('audio_button_events_total{button="BUTTON_2",type="PRESS"}') >= 1
    assert delta("audio_sounds_started_total") >= 1
    assert delta("audio_packets_sent_total") >= 5


async def test_reflection_off_by_default_and_on_when_asked(
    server: AudioServer, server_factory: ServerFactory, pki: EphemeralPki
) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def services(port: int) -> list[str]:
        tls = pki.device_tls("acme", "operator")
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls)) as channel:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            response = await call.read()
            await call.done_writing()
            return [s.name for s in response.list_services_response.service]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await services(server.port)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    app = await server_factory(reflection=True)
    assert "com.opalcamera.test.DeviceService" in await services(app.port)


def server_cert_serial(port: int, tls: TlsMaterial, workdir: Path) -> int:
    """The certificate the server presents in a fresh handshake (ALPN h2, like gRPC)."""
    ca, cert, key = workdir / "ca.pem", workdir / "c.pem", workdir / "k.pem"
    ca.write_bytes(tls.ca_pem)
    cert.write_bytes(tls.cert_pem)
    key.write_bytes(tls.key_pem)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def own_pki(tmp_path: Path, pki: EphemeralPki) -> Path:
    """A copy of the PKI dir this test may rewrite."""
    root = tmp_path / "pki"
    shutil.copytree(pki.root, root)
    return root


async def test_server_certificate_rotates_without_restart(
    server_factory: ServerFactory, own_pki: Path, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    app = await server_factory(pki_dir=own_pki, reload_interval_s=FAST_RELOAD)
    tls = pki.device_tls("acme", "rotating")
    old_serial = await asyncio.to_thread(server_cert_serial, app.port, tls, tmp_path)
    assert old_serial == pki.server.cert.serial_number
    async with connect(app, "acme", "rotating") as client:
        await client.press(MODE)
        fresh = pki_lib.issue_server_cert(pki.ca, ["localhost"], ["127.0.0.1"])  # new key, new serial
        await reload_attempt(
            app.watchers,
            "server-tls",
            lambda: pki_lib.write_certified_key(
                fresh, own_pki / "server.crt", own_pki / "server.key", force=True
            ),
            ok=True,
        )
        new_serial = await asyncio.to_thread(server_cert_serial, app.port, tls, tmp_path)
        assert new_serial == fresh.cert.serial_number != old_serial
        await client.press(MODE)  # the live connection kept working
        await wait_for(lambda: client.view.leds[4] != 0)  # mode 2
        assert not client.ends
    async with connect(app, "acme", "after-rotation") as late:
        await late.press(MODE)
        assert not late.ends


async def test_a_second_ca_in_the_bundle_admits_its_devices(
    server_factory: ServerFactory, own_pki: Path, pki: EphemeralPki, connect: Connect
) -> None:
    app = await server_factory(pki_dir=own_pki, reload_interval_s=FAST_RELOAD)
    new_ca = pki_lib.create_ca("Fleet CA 2")
    device = pki_lib.issue_device_cert(new_ca, Identity("acme", "from-ca-2"))
    tls = TlsMaterial(
        device.cert_pem(), device.key_pem(), pki.ca.cert_pem()
    )  # server cert is still from CA 1
    bundle = pki.ca.cert_pem() + new_ca.cert_pem()
    await reload_attempt(
        app.watchers, "server-tls", lambda: (own_pki / "ca.crt").write_bytes(bundle), ok=True
    )
    async with connect(app, "acme", "from-ca-2", tls=tls) as client:
        await client.press(MODE)
        assert not client.ends
    async with connect(app, "acme", "from-ca-1") as old_fleet:  # the first CA's devices still connect
        await old_fleet.press(MODE)
        assert not old_fleet.ends


async def test_a_broken_new_server_key_keeps_the_old_one(
    server_factory: ServerFactory, own_pki: Path, pki: EphemeralPki, connect: Connect
) -> None:
    app = await server_factory(pki_dir=own_pki, reload_interval_s=FAST_RELOAD)
    other = pki_lib.issue_server_cert(pki.ca, ["localhost"], ["127.0.0.1"])
    await reload_attempt(  # the new key does not match server.crt: refused
        app.watchers, "server-tls", lambda: (own_pki / "server.key").write_bytes(other.key_pem()), ok=False
    )
    async with connect(app, "acme", "unaffected") as client:
        await client.press(MODE)
        assert not client.ends
