"""Every call is authenticated by the interceptor from the TLS-verified client certificate."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

import grpc
import pytest
from cryptography import x509

from auth import pki as pki_lib
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms import comms_pb2 as pb
from comms import comms_pb2_grpc as pb_grpc
from server.app import AudioServer
from tests.conftest import Connect
from tests.helpers import MODE, EphemeralPki, button_event, mode_of, wait_for

URI = x509.UniformResourceIdentifier
NOW = dt.datetime.now(dt.UTC)


async def call_each_method(port: int, creds: grpc.ChannelCredentials) -> dict[str, grpc.StatusCode]:
    """Open each of the three streams with ``creds``; return the status code each ends with."""
    codes: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        status = stub.StatusStream()
        codes["status"] = (await _read_error(status.read)).code()
        events = stub.EventStream()
        await _ignore_errors(events.write(button_event(MODE)))
        codes["event"] = (await _read_error(events.read)).code()
        audio = stub.ServerAudioStream(pb.AudioStreamRequest(start=True))
        codes["audio"] = (await _read_error(audio.read)).code()
    return codes


async def _ignore_errors(aw: object) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
        await aw  # type: ignore[misc]


async def _read_error(read: Callable[[], object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read()  # type: ignore[misc]
    return info.value


def foreign_ca_device(p: EphemeralPki) -> TlsMaterial:
    """A well-formed certificate for acme/dev-1, signed by a CA the server does not trust."""
    other = pki_lib.create_ca("Some Other CA")
    device = pki_lib.issue_device_cert(other, Identity("acme", "dev-1"))
    return TlsMaterial(device.cert_pem(), device.key_pem(), p.ca.cert_pem())


def no_client_cert(p: EphemeralPki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=p.ca.cert_pem())


def spiffe(path: str, domain: str = "audio.example.internal") -> URI:
    return URI(f"spiffe://{domain}{path}")


CASES: dict[str, tuple[Callable[[EphemeralPki], TlsMaterial | grpc.ChannelCredentials], grpc.StatusCode]] = {
    # Refused in the TLS handshake: the call never reaches gRPC.
    "no client certificate": (no_client_cert, grpc.StatusCode.UNAVAILABLE),
    "certificate from a foreign CA": (foreign_ca_device, grpc.StatusCode.UNAVAILABLE),
    "expired certificate": (
        lambda p: p.odd_client(
            [spiffe("/tenant/acme/device/old")],
            not_before=NOW - dt.timedelta(days=30),
            not_after=NOW - dt.timedelta(days=1),
        ),
        grpc.StatusCode.UNAVAILABLE,
    ),
    "not yet valid certificate": (
        lambda p: p.odd_client(
            [spiffe("/tenant/acme/device/new")],
            not_before=NOW + dt.timedelta(days=1),
            not_after=NOW + dt.timedelta(days=30),
        ),
        grpc.StatusCode.UNAVAILABLE,
    ),
    # Refused by the interceptor: valid CA, no usable identity.
    "no SAN": (lambda p: p.odd_client([]), grpc.StatusCode.UNAUTHENTICATED),
    "DNS SAN only": (
        lambda p: p.odd_client([x509.DNSName("dev-1.acme")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "two URI SANs": (
        lambda p: p.odd_client([spiffe("/tenant/acme/device/dev-1"), spiffe("/tenant/acme/device/dev-2")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "malformed SAN path": (
        lambda p: p.odd_client([spiffe("/tenant/acme/dev/dev-1")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "SAN with invalid characters": (
        lambda p: p.odd_client([spiffe("/tenant/ACME/device/dev 1")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "not a spiffe URI": (
        lambda p: p.odd_client([URI("https://acme.example/dev-1")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "foreign trust domain": (
        lambda p: p.odd_client([spiffe("/tenant/acme/device/dev-1", "evil.example")]),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_rejected_on_every_stream_while_others_keep_working(
    case: str, server: AudioServer, pki: EphemeralPki, connect: Connect
) -> None:
    make_tls, expected = CASES[case]
    async with connect(server, "acme", "healthy") as healthy:
        await healthy.press(MODE)
        made = make_tls(pki)
        creds = channel_credentials(made) if isinstance(made, TlsMaterial) else made
        codes = await call_each_method(server.port, creds)
        assert codes == {"status": expected, "event": expected, "audio": expected}
        assert server.registry.controller(Identity("acme", "dev-1")) is None  # no handler ran
        await healthy.press(MODE)
        await wait_for(lambda: mode_of(healthy.view.leds) == 2)
        assert not healthy.ends


async def test_rejection_message_is_clear(server: AudioServer, pki: EphemeralPki) -> None:
    tls = pki.odd_client([spiffe("/tenant/acme/device/dev-1", "evil.example")])
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        call = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(pb.AudioStreamRequest(start=True))
        error = await _read_error(call.read)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "trust domain" in (error.details() or "")
    assert "Traceback" not in (error.details() or "")


async def test_handler_refuses_to_run_without_the_interceptor() -> None:
    from server.interceptor import current_auth

    with pytest.raises(RuntimeError, match="outside the auth interceptor"):
        current_auth()
