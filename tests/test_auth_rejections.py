"""Every call is authenticated by the interceptor from the TLS-verified client certificate."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from auth import pki as pki_lib
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc
from server.app import AudioServer
from tests.conftest import Connect, ServerFactory
from tests.helpers import (
    MODE,
    EphemeralPki,
    auth_failures,
    build_cert,
    counted_since,
    mode_of,
    wait_for,
)

URI = x509.UniformResourceIdentifier
NOW = dt.datetime.now(dt.UTC)


async def call_each_method(port: int, creds: grpc.ChannelCredentials) -> dict[str, grpc.StatusCode]:
    """Open each of the three streams with ``creds``; return the status code each ends with."""
    codes: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        status = stub.StatusStream()
        codes["status"] = (await _read_error(status.read)).code()
        # Refused on its headers: no event is written, since a client write racing the server's
        # status can turn that status into INTERNAL on the client (grpc/grpc#36066).
        events = stub.EventStream()
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


UNAVAILABLE, UNAUTH = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED
ACME_1 = "/tenant/acme/device/dev-1"
Make = Callable[[EphemeralPki], TlsMaterial | grpc.ChannelCredentials]


def leaf(p: EphemeralPki, **kwargs: object) -> TlsMaterial:
    return p.tls(build_cert(p.ca, [spiffe(ACME_1)], **kwargs))  # type: ignore[arg-type]


# case -> (client credentials, status code, counted reason: None when TLS refuses before gRPC)
CASES: dict[str, tuple[Make, grpc.StatusCode, str | None]] = {
    # Refused in the TLS handshake: the call never reaches gRPC.
    "no client certificate": (no_client_cert, UNAVAILABLE, None),
    "certificate from a foreign CA": (foreign_ca_device, UNAVAILABLE, None),
    "expired certificate": (
        lambda p: p.odd_client(
            [spiffe("/tenant/acme/device/old")],
            not_before=NOW - dt.timedelta(days=30),
            not_after=NOW - dt.timedelta(days=1),
        ),
        UNAVAILABLE,
        None,
    ),
    "not yet valid certificate": (
        lambda p: p.odd_client(
            [spiffe("/tenant/acme/device/new")],
            not_before=NOW + dt.timedelta(days=1),
            not_after=NOW + dt.timedelta(days=30),
        ),
        UNAVAILABLE,
        None,
    ),
    # Refused by the interceptor: signed by the fleet CA, but breaks one rule (everything else valid).
    "no SAN": (lambda p: p.odd_client([]), UNAUTH, "cert_no_identity"),
    "DNS SAN only": (lambda p: p.odd_client([x509.DNSName("dev-1.acme")]), UNAUTH, "cert_no_identity"),
    "two URI SANs": (
        lambda p: p.odd_client([spiffe(ACME_1), spiffe("/tenant/acme/device/dev-2")]),
        UNAUTH,
        "cert_ambiguous_identity",
    ),
    "malformed SAN path": (
        lambda p: p.odd_client([spiffe("/tenant/acme/dev/dev-1")]),
        UNAUTH,
        "cert_malformed_identity",
    ),
    "SAN with invalid characters": (
        lambda p: p.odd_client([spiffe("/tenant/ACME/device/dev 1")]),
        UNAUTH,
        "cert_malformed_identity",
    ),
    "not a spiffe URI": (
        lambda p: p.odd_client([URI("https://acme.example/dev-1")]),
        UNAUTH,
        "cert_malformed_identity",
    ),
    "foreign trust domain": (
        lambda p: p.odd_client([spiffe(ACME_1, "evil.example")]),
        UNAUTH,
        "cert_foreign_trust_domain",
    ),
    "CA:TRUE certificate used as a device": (lambda p: leaf(p, ca=True), UNAUTH, "cert_not_leaf"),
    "CA:TRUE with a leaf key usage (digitalSignature only)": (
        lambda p: leaf(p, ca=True, key_usage={"key_cert_sign": False, "crl_sign": False}),
        UNAUTH,
        "cert_not_leaf",
    ),
    "no BasicConstraints": (lambda p: leaf(p, ca=None), UNAUTH, "cert_not_leaf"),
    "no KeyUsage": (lambda p: leaf(p, omit_key_usage=True), UNAUTH, "cert_key_usage"),
    # (A leaf without digitalSignature cannot even be used by a gRPC client: BoringSSL refuses to
    # sign the handshake with it. tests/test_profile.py covers that rule.)
    "KeyUsage with keyCertSign": (
        lambda p: leaf(p, key_usage={"key_cert_sign": True}),
        UNAUTH,
        "cert_key_usage",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_rejected_on_every_stream_while_others_keep_working(
    case: str, server: AudioServer, pki: EphemeralPki, connect: Connect
) -> None:
    make_tls, expected, reason = CASES[case]
    async with connect(server, "acme", "healthy") as healthy:
        await healthy.press(MODE)
        made = make_tls(pki)
        creds = channel_credentials(made) if isinstance(made, TlsMaterial) else made
        before = auth_failures()
        codes = await call_each_method(server.port, creds)
        assert codes == {"status": expected, "event": expected, "audio": expected}
        assert counted_since(before) == ({reason: 3} if reason else {})  # this rule, nothing else
        assert server.registry.controller(Identity("acme", "dev-1")) is None  # no handler ran
        await healthy.press(MODE)
        await wait_for(lambda: mode_of(healthy.view.leds) == 2)
        assert not healthy.ends


@pytest.mark.parametrize("case", list(CASES))
async def test_create_session_refuses_the_same_certificates(
    case: str, server: AudioServer, pki: EphemeralPki
) -> None:
    """The mTLS-only call applies every certificate rule too: no token is ever issued for these."""
    make_tls, expected, reason = CASES[case]
    made = make_tls(pki)
    creds = channel_credentials(made) if isinstance(made, TlsMaterial) else made
    before = auth_failures()
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest(), timeout=10)
    assert info.value.code() == expected
    assert counted_since(before) == ({reason: 1} if reason else {})


def permissive_root() -> pki_lib.CertifiedKey:
    """A self-signed CA with no path length limit: TLS then accepts chains through intermediates."""
    root = pki_lib.create_ca("Permissive Root")
    return build_cert_self_signed(root)


def build_cert_self_signed(ca: pki_lib.CertifiedKey) -> pki_lib.CertifiedKey:
    from cryptography.hazmat.primitives import hashes

    builder = (
        pki_lib.with_extensions(x509.CertificateBuilder(), pki_lib.ca_extensions(path_length=None))
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
    )
    return pki_lib.CertifiedKey(ca.key, builder.sign(ca.key, hashes.SHA256()))


async def test_intermediate_minted_by_the_fleet_ca_cannot_mint_devices(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path, connect: Connect
) -> None:
    """A CA:TRUE certificate signed by a trusted CA mints globex/victim; TLS accepts the chain, we do
    not: an intermediate may issue devices only as an issuing CA (pathLen 0, name constraints)."""
    root = permissive_root()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca.cert_pem() + root.cert_pem())
    app = await server_factory(client_ca=bundle)
    intermediate = build_cert(root, [], ca=True)
    minted = build_cert(intermediate, [spiffe("/tenant/globex/device/victim")])
    chain = TlsMaterial(minted.cert_pem() + intermediate.cert_pem(), minted.key_pem(), pki.ca.cert_pem())
    before = auth_failures()
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", channel_credentials(chain)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest(), timeout=10)
    assert info.value.code() == UNAUTH  # the handshake passed: the application refused
    assert counted_since(before) == {"cert_issuing_ca": 1}
    async with connect(app, "acme", "fine") as fine:  # devices of either CA still work
        await fine.press(MODE)
        assert not fine.ends


async def test_rejection_message_is_clear(server: AudioServer, pki: EphemeralPki) -> None:
    tls = pki.odd_client([spiffe("/tenant/acme/device/dev-1", "evil.example")])
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        call = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(pb.AudioStreamRequest(start=True))
        error = await _read_error(call.read)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "trust domain" in (error.details() or "")
    assert "Traceback" not in (error.details() or "")


async def test_handler_refuses_to_run_without_the_interceptor() -> None:
    from server.access.interceptor import current_auth

    with pytest.raises(RuntimeError, match="outside the auth interceptor"):
        current_auth()
