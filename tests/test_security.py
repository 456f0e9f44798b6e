"""The security suite: every tested attack against a real server, with the exact status code.

Each row also checks that a healthy device keeps being served in parallel.
The table in SECURITY.md lists the same rows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from auth import pki as pki_lib
from auth.identity import Identity
from auth.keys import create_signing_key
from auth.revocation import revoke
from auth.tls import TlsMaterial, channel_credentials
from auth.tokens import certificate_thumbprint
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc
from device.client import DeviceClient
from server.app import AudioServer
from tests.conftest import Connect, ServerFactory
from tests.helpers import (
    MODE,
    PLAY,
    EphemeralPki,
    auth_failures,
    button_event,
    counted_since,
    mode_of,
    reload_attempt,
    wait_for,
)

FAST_RELOAD = 0.05
CALL_TIMEOUT_S = 10.0
SETTLE_S = 1.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Target:
    """acme/dev-1 with a real current session, and what is needed to forge tokens for it."""

    server: AudioServer
    pki: EphemeralPki
    tls: TlsMaterial
    session_id: str
    token: str

    def claims(self, **overrides: Any) -> dict[str, Any]:
        cert = self.pki.device("acme", "dev-1").cert
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "audio-server",
            "aud": "audio-device-service",
            "sub": "dev-1",
            "tid": "acme",
            "sid": self.session_id,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": "forged",
            "cnf": {"x5t#S256": certificate_thumbprint(cert)},
        }
        for key, value in overrides.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return claims

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        key = self.server.trust.keys.current
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": kid or key.kid})

    def sign_raw(self, header: str, payload: str) -> str:
        """Sign JSON text exactly as given (duplicate members, odd types): a valid EdDSA signature."""
        signing_input = f"{b64(header.encode())}.{b64(payload.encode())}"
        signature = self.server.trust.keys.current.private.sign(signing_input.encode())
        return f"{signing_input}.{b64(signature)}"

    def header(self, **fields: Any) -> str:
        return json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": self.server.trust.keys.current.kid, **fields})


async def create_session(port: int, tls: TlsMaterial, token: str | None = None) -> spb.CreateSessionResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls)) as channel:
        return await spb_grpc.SessionServiceStub(channel).CreateSession(
            spb.CreateSessionRequest(), metadata=metadata
        )


async def call_each_method(port: int, tls: TlsMaterial, token: str | None) -> dict[str, grpc.StatusCode]:
    """Open each DeviceService stream with ``token``; return the code each ends with."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    codes: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls)) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        for kind, call in (
            ("status", stub.StatusStream(metadata=metadata)),
            ("event", stub.EventStream(metadata=metadata)),
            ("audio", stub.ServerAudioStream(pb.AudioStreamRequest(start=True), metadata=metadata)),
        ):
            # Nothing is written (a write racing a refusal reads as INTERNAL, grpc/grpc#36066):
            # accepted streams send their headers at once; refused ones end with a status.
            await asyncio.wait_for(call.initial_metadata(), CALL_TIMEOUT_S)
            try:
                codes[kind] = await asyncio.wait_for(call.code(), SETTLE_S)
            except TimeoutError:
                codes[kind] = grpc.StatusCode.OK  # still open: accepted
            call.cancel()
    return codes


@pytest.fixture
async def target(server: AudioServer, pki: EphemeralPki) -> Target:
    tls = pki.device_tls("acme", "dev-1")
    response = await create_session(server.port, tls)
    return Target(server, pki, tls, response.session_id, response.token)


@pytest.fixture
async def healthy(server: AudioServer, connect: Connect) -> AsyncIterator[DeviceClient]:
    async with connect(server, "acme", "healthy") as client:
        await client.press(MODE)
        yield client


def only_audio_replaced(client: DeviceClient) -> bool:
    """Probing a session's streams opens a newer audio stream, which ends the device's own (by design)."""
    ends = dict(client.ends)
    audio = ends.pop("audio", None)
    return not ends and (audio is None or "replaced by a newer audio stream" in audio.details)


async def still_healthy(client: DeviceClient, presses_so_far: int) -> None:
    await client.press(MODE)
    await wait_for(lambda: mode_of(client.view.leds) == (presses_so_far + 1) % 5)
    assert not client.ends


def hs256_with_public_key(t: Target) -> str:
    """The classic alg-confusion attack: HMAC-SHA256 keyed with the server's public key."""
    public = t.server.trust.keys.current.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": t.server.trust.keys.current.kid}).encode())
    body = b64(json.dumps(t.claims()).encode())
    signature = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def alg_none(t: Target) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(t.claims()).encode())}."


def bad_signature(t: Target) -> str:
    head, _body, sig = t.sign(t.claims()).split(".")
    forged_body = b64(json.dumps(t.claims(sub="dev-2")).encode())
    return f"{head}.{forged_body}.{sig}"


def other_key(t: Target) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = t.server.trust.keys.current
    return jwt.encode(
        t.claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": key.kid}
    )


UNAUTH, DENIED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
Row = Callable[[Target], tuple[TlsMaterial, str | None]]


def long_ago(t: Target) -> str:
    """Expired an hour ago, with an ordinary lifetime (so only the expiry rule applies)."""
    now = int(time.time())
    return t.sign(t.claims(iat=now - 4000, nbf=now - 4000, exp=now - 3400))


def duplicate_payload_member(t: Target) -> str:
    body = json.dumps(t.claims())[:-1] + ', "sub": "dev-2"}'  # a second "sub": which one wins?
    return t.sign_raw(t.header(), body)


def duplicate_header_member(t: Target) -> str:
    header = t.header()[:-1] + ', "kid": "k20200101T000000Z-deadbeef"}'
    return t.sign_raw(header, json.dumps(t.claims()))


# row -> (credentials and token, status code, the one reason counted for it)
TOKEN_ROWS: dict[str, tuple[Row, grpc.StatusCode, str]] = {
    "no token": (lambda t: (t.tls, None), UNAUTH, "token_missing"),
    "empty bearer": (lambda t: (t.tls, ""), UNAUTH, "token_missing"),
    "garbage token": (lambda t: (t.tls, "not.a.jwt"), UNAUTH, "token_malformed"),
    "alg none": (lambda t: (t.tls, alg_none(t)), UNAUTH, "token_algorithm"),
    "HS256 signed with the public key": (
        lambda t: (t.tls, hs256_with_public_key(t)),
        UNAUTH,
        "token_algorithm",
    ),
    "unknown kid": (
        lambda t: (t.tls, t.sign(t.claims(), kid="k20200101T000000Z-deadbeef")),
        UNAUTH,
        "token_unknown_kid",
    ),
    "kid is a number": (
        lambda t: (t.tls, t.sign_raw(t.header(kid=7), json.dumps(t.claims()))),
        UNAUTH,
        "token_header",
    ),
    "kid is an object": (
        lambda t: (t.tls, t.sign_raw(t.header(kid={"a": 1}), json.dumps(t.claims()))),
        UNAUTH,
        "token_header",
    ),
    "crit names an unknown extension": (
        lambda t: (t.tls, t.sign_raw(t.header(crit=["exp-ext"], **{"exp-ext": 1}), json.dumps(t.claims()))),
        UNAUTH,
        "token_header",
    ),
    "crit is not a list": (
        lambda t: (t.tls, t.sign_raw(t.header(crit="b64"), json.dumps(t.claims()))),
        UNAUTH,
        "token_header",
    ),
    "header is not an object": (
        lambda t: (t.tls, t.sign_raw("[1]", json.dumps(t.claims()))),
        UNAUTH,
        "token_malformed",
    ),
    "payload is not an object": (lambda t: (t.tls, t.sign_raw(t.header(), '"x"')), UNAUTH, "token_malformed"),
    "duplicate header member": (
        lambda t: (t.tls, duplicate_header_member(t)),
        UNAUTH,
        "token_duplicate_member",
    ),
    "duplicate payload member": (
        lambda t: (t.tls, duplicate_payload_member(t)),
        UNAUTH,
        "token_duplicate_member",
    ),
    "exp is a string": (
        lambda t: (t.tls, t.sign(t.claims(exp=str(int(time.time()) + 600)))),
        UNAUTH,
        "token_claims",
    ),
    "nbf is a string": (
        lambda t: (t.tls, t.sign(t.claims(nbf=str(int(time.time()))))),
        UNAUTH,
        "token_claims",
    ),
    "iat is a float": (lambda t: (t.tls, t.sign(t.claims(iat=time.time()))), UNAUTH, "token_claims"),
    "exp is a bool": (lambda t: (t.tls, t.sign(t.claims(exp=True))), UNAUTH, "token_claims"),
    "lifetime longer than the server issues": (
        lambda t: (t.tls, t.sign(t.claims(exp=int(time.time()) + 7 * 86_400))),
        UNAUTH,
        "token_lifetime",
    ),
    "bad signature (claims edited)": (lambda t: (t.tls, bad_signature(t)), UNAUTH, "token_signature"),
    "signed by another key with our kid": (lambda t: (t.tls, other_key(t)), UNAUTH, "token_signature"),
    "expired": (lambda t: (t.tls, long_ago(t)), UNAUTH, "token_expired"),
    "nbf in the future": (
        lambda t: (t.tls, t.sign(t.claims(nbf=int(time.time()) + 3600))),
        UNAUTH,
        "token_not_yet_valid",
    ),
    "iat in the future": (
        lambda t: (t.tls, t.sign(t.claims(iat=int(time.time()) + 3600))),
        UNAUTH,
        "token_not_yet_valid",
    ),
    "wrong aud": (lambda t: (t.tls, t.sign(t.claims(aud="someone-else"))), UNAUTH, "token_claims"),
    "wrong iss": (lambda t: (t.tls, t.sign(t.claims(iss="evil"))), UNAUTH, "token_claims"),
    "missing cnf": (lambda t: (t.tls, t.sign(t.claims(cnf=None))), UNAUTH, "token_claims"),
    "missing sid": (lambda t: (t.tls, t.sign(t.claims(sid=None))), UNAUTH, "token_claims"),
    "missing exp": (lambda t: (t.tls, t.sign(t.claims(exp=None))), UNAUTH, "token_claims"),
    "unknown session id": (
        lambda t: (t.tls, t.sign(t.claims(sid="0123456789abcdef"))),
        UNAUTH,
        "session_superseded",
    ),
    "token of acme/dev-1 with acme/dev-2's cert": (
        lambda t: (t.pki.device_tls("acme", "dev-2"), t.token),
        DENIED,
        "token_identity_mismatch",
    ),
    "token of acme/dev-1 with globex/dev-1's cert": (
        lambda t: (t.pki.device_tls("globex", "dev-1"), t.token),
        DENIED,
        "token_identity_mismatch",
    ),
    "token replayed with another cert of the same device": (
        lambda t: (t.pki.tls(pki_lib.issue_device_cert(t.pki.ca, Identity("acme", "dev-1"))), t.token),
        DENIED,
        "token_binding_mismatch",
    ),
}
LIBRARY_TEXT = ("jwt", "Unexpected", "<class", "Traceback", "Error")


@pytest.mark.parametrize("row", list(TOKEN_ROWS))
async def test_token_attacks(
    row: str, target: Target, healthy: DeviceClient, caplog: pytest.LogCaptureFixture
) -> None:
    make, expected, reason = TOKEN_ROWS[row]
    tls, token = make(target)
    before = auth_failures()
    codes = await call_each_method(target.server.port, tls, token)
    assert codes == {"status": expected, "event": expected, "audio": expected}
    assert counted_since(before) == {reason: 3}  # exactly this rule refused it, on each stream
    assert target.server.registry.controller(Identity("acme", "dev-1")) is None  # no handler ran
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]  # no tracebacks
    await still_healthy(healthy, 1)


@pytest.mark.parametrize("row", list(TOKEN_ROWS))
async def test_token_refusals_leak_no_library_text(row: str, target: Target) -> None:
    make, expected, _ = TOKEN_ROWS[row]
    tls, token = make(target)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    async with grpc.aio.secure_channel(f"127.0.0.1:{target.server.port}", channel_credentials(tls)) as ch:
        call = pb_grpc.DeviceServiceStub(ch).ServerAudioStream(
            pb.AudioStreamRequest(start=True), metadata=metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), CALL_TIMEOUT_S)
    assert info.value.code() == expected
    details = info.value.details() or ""
    assert details and not any(text in details for text in LIBRARY_TEXT), details


async def test_two_authorization_entries_are_refused(target: Target) -> None:
    """Which one would count? Neither: a call with two is refused before either is looked at."""
    before = auth_failures()
    metadata = (("authorization", f"Bearer {target.token}"), ("authorization", "Bearer x.y.z"))
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{target.server.port}", channel_credentials(target.tls)
    ) as ch:
        call = pb_grpc.DeviceServiceStub(ch).ServerAudioStream(
            pb.AudioStreamRequest(start=True), metadata=metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), CALL_TIMEOUT_S)
        assert info.value.code() == UNAUTH
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await spb_grpc.SessionServiceStub(ch).CreateSession(spb.CreateSessionRequest(), metadata=metadata)
        assert info.value.code() == UNAUTH
    assert counted_since(before) == {"token_ambiguous": 2}


async def test_refresh_with_a_superseded_sessions_token_is_refused(target: Target) -> None:
    """After a new session, the old session's token can neither open streams nor be refreshed."""
    newer = await create_session(target.server.port, target.tls)
    assert newer.session_id != target.session_id
    before = auth_failures()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(target.server.port, target.tls, token=target.token)
    assert info.value.code() == UNAUTH
    assert "superseded" in (info.value.details() or "")
    assert counted_since(before) == {"session_superseded": 1}
    refreshed = await create_session(target.server.port, target.tls, token=newer.token)  # the current one may
    assert refreshed.session_id == newer.session_id


async def test_valid_token_is_accepted(target: Target) -> None:
    codes = await call_each_method(target.server.port, target.tls, target.token)
    assert codes == {"status": grpc.StatusCode.OK, "event": grpc.StatusCode.OK, "audio": grpc.StatusCode.OK}


async def test_rejections_are_counted_by_reason(target: Target) -> None:
    from server import metrics

    before = metrics.AUTH_FAILURES.labels(reason="token_expired")._value.get()
    expired = target.sign(
        target.claims(iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    )
    await call_each_method(target.server.port, target.tls, expired)
    assert metrics.AUTH_FAILURES.labels(reason="token_expired")._value.get() == before + 3


async def test_superseded_session(target: Target, connect: Connect, healthy: DeviceClient) -> None:
    async with connect(target.server, "acme", "dev-1") as current:  # a new session supersedes target's
        codes = await call_each_method(target.server.port, target.tls, target.token)
        assert codes == {"status": UNAUTH, "event": UNAUTH, "audio": UNAUTH}
        await current.press(MODE)
        assert not current.ends
    await still_healthy(healthy, 1)


async def test_new_session_ends_the_old_sessions_streams(server: AudioServer, connect: Connect) -> None:
    async with connect(server, "acme", "dev-1") as first:
        await wait_for(lambda: first.status_requests >= 1)
        async with connect(server, "acme", "dev-1") as second:
            await wait_for(lambda: len(first.ends) >= 3)
            assert {first.ends[k].code for k in ("status", "event", "audio")} == {grpc.StatusCode.ABORTED}
            assert "superseded" in first.ends["status"].details
            assert second.session is not None and first.session is not None
            assert second.session.session_id != first.session.session_id


async def test_refresh_keeps_the_session_id(target: Target) -> None:
    refreshed = await create_session(target.server.port, target.tls, token=target.token)
    assert refreshed.session_id == target.session_id
    assert refreshed.token != target.token
    codes = await call_each_method(target.server.port, target.tls, target.token)  # the old token still works
    assert set(codes.values()) == {grpc.StatusCode.OK}


async def test_refresh_with_a_bad_token_is_refused(target: Target) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(target.server.port, target.pki.device_tls("acme", "dev-2"), token=target.token)
    assert info.value.code() == DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(target.server.port, target.tls, token="garbage")
    assert info.value.code() == UNAUTH


async def test_token_claims_and_lifetime(target: Target) -> None:
    response = await create_session(target.server.port, target.tls)
    header = jwt.get_unverified_header(response.token)
    claims = jwt.decode(response.token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["kid"] == target.server.trust.keys.current.kid
    assert set(claims) == {"iss", "aud", "sub", "tid", "sid", "iat", "nbf", "exp", "jti", "cnf", "fms"}
    assert claims["fms"] == 20  # no max_frame_ms asked: today's 20 ms packets
    assert (claims["tid"], claims["sub"], claims["sid"]) == ("acme", "dev-1", response.session_id)
    assert claims["exp"] - claims["iat"] == 900
    assert response.expires_at_unix == claims["exp"]
    assert claims["iat"] < response.refresh_after_unix < claims["exp"]
    assert claims["cnf"]["x5t#S256"] == certificate_thumbprint(target.pki.device("acme", "dev-1").cert)


async def test_streams_outlive_token_expiry(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect
) -> None:
    app = await server_factory(token_ttl_s=2, token_leeway_s=0)
    async with connect(app, "acme", "long-lived") as client:
        assert client.session is not None
        first_token, expired_at = client.session.token, client.session.expires_at_unix
        await client.press(MODE)
        await wait_for(lambda: time.time() > expired_at + 1, timeout=10)  # the first token has expired
        tls = pki.device_tls("acme", "long-lived")
        assert await call_each_method(app.port, tls, first_token) == {
            "status": UNAUTH,
            "event": UNAUTH,
            "audio": UNAUTH,
        }
        await client.press(MODE)  # the streams opened with it are still up
        await wait_for(lambda: mode_of(client.view.leds) == 2)
        assert not client.ends


# --- key rotation -------------------------------------------------------------


@pytest.fixture
async def rotating(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path
) -> tuple[AudioServer, Path]:
    key_dir = tmp_path / "signing"
    shutil.copytree(pki.signing_dir, key_dir)
    app = await server_factory(signing_key_dir=key_dir, reload_interval_s=FAST_RELOAD)
    return app, key_dir


async def test_key_rotation_keeps_existing_sessions(
    rotating: tuple[AudioServer, Path], connect: Connect, pki: EphemeralPki
) -> None:
    app, key_dir = rotating
    old_kid = app.trust.keys.current.kid
    async with connect(app, "acme", "rotate-1") as client:
        assert client.session is not None
        old_token = client.session.token
        new_key = create_signing_key(key_dir)
        await wait_for(lambda: app.trust.keys.current.kid == new_key.kid)
        refreshed = await client.create_session(refresh=True)  # old-key token still verifies
        assert jwt.get_unverified_header(refreshed.token)["kid"] == new_key.kid != old_kid
        await client.press(MODE)
        assert not client.ends
        tls = pki.device_tls("acme", "rotate-1")
        assert set((await call_each_method(app.port, tls, old_token)).values()) == {grpc.StatusCode.OK}
        assert only_audio_replaced(client)

        (key_dir / f"{old_kid}.key").unlink()  # rotated out
        await wait_for(lambda: old_kid not in app.trust.keys.keys)
        codes = await call_each_method(app.port, tls, old_token)
        assert codes == {"status": UNAUTH, "event": UNAUTH, "audio": UNAUTH}
        assert set((await call_each_method(app.port, tls, refreshed.token)).values()) == {grpc.StatusCode.OK}
        await client.press(MODE)  # streams opened earlier are not logged out
        assert only_audio_replaced(client)


async def test_a_broken_key_directory_keeps_the_old_keys(rotating: tuple[AudioServer, Path]) -> None:
    app, key_dir = rotating
    kid = app.trust.keys.current.kid
    broken = key_dir / "k20990101T000000Z-00000000.key"
    await reload_attempt(app.watchers, "signing-keys", lambda: broken.write_text("not a key"), ok=False)
    assert app.trust.keys.current.kid == kid


# --- revocation ---------------------------------------------------------------


async def test_revoked_cert_is_refused_and_its_live_streams_cut(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    async with connect(app, "acme", "stolen") as stolen, connect(app, "acme", "fine") as fine:
        await stolen.press(MODE)
        await stolen.press(PLAY)
        await wait_for(lambda: stolen.packets_received > 2)
        revoked_at = time.monotonic()
        revoke(pki.ca, crl, [pki.device("acme", "stolen").cert.serial_number])
        await wait_for(lambda: len(stolen.ends) >= 3, timeout=2)
        assert time.monotonic() - revoked_at < 1.0  # "within a second"
        assert {stolen.ends[k].code for k in ("status", "event", "audio")} == {DENIED}
        assert "revoked" in stolen.ends["status"].details
        assert stolen.sink.sounds[-1].ended  # type: ignore[attr-defined]  # the sound got its is_end
        before = auth_failures()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_session(app.port, pki.device_tls("acme", "stolen"))
        assert info.value.code() == DENIED
        assert counted_since(before) == {"certificate_revoked": 1}
        await fine.press(MODE)
        assert not fine.ends


async def test_crl_not_signed_by_the_ca_is_ignored(
    server_factory: ServerFactory, pki: EphemeralPki, connect: Connect, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    impostor = pki_lib.create_ca(pki.ca.cert.subject.rfc4514_string().split("=", 1)[1])
    serial = pki.device("acme", "victim").cert.serial_number
    await reload_attempt(app.watchers, "crl", lambda: revoke(impostor, crl, [serial]), ok=False)
    async with connect(app, "acme", "victim") as victim:
        await victim.press(MODE)
        assert not victim.ends


# --- abuse limits -------------------------------------------------------------


async def test_event_flood_is_acked_but_not_applied(server_factory: ServerFactory, pki: EphemeralPki) -> None:
    app = await server_factory(event_rate_per_s=5, event_burst=10)
    tls = pki.device_tls("acme", "flooder")
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", channel_credentials(tls)) as channel:
        metadata = (("authorization", f"Bearer {(await create_session(app.port, tls)).token}"),)
        events = pb_grpc.DeviceServiceStub(channel).EventStream(metadata=metadata)
        acks = []
        started = time.monotonic()
        for _ in range(200):
            await events.write(button_event(MODE))
            acks.append((await events.read()).ack)
        elapsed = time.monotonic() - started
        assert len(acks) == 200  # every event acked, in order: the button loop never froze
        applied = sum(acks)
        assert 10 <= applied <= 10 + int(5 * elapsed) + 1
        controller = app.registry.controller(Identity("acme", "flooder"))
        assert controller is not None and controller.state.mode == applied % 5  # only applied ones count
        await events.done_writing()


async def test_oversized_message_is_refused(target: Target, healthy: DeviceClient) -> None:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{target.server.port}", channel_credentials(target.tls)
    ) as ch:
        metadata = (("authorization", f"Bearer {target.token}"),)
        status = pb_grpc.DeviceServiceStub(ch).StatusStream(metadata=metadata)
        await status.read()
        await status.write(pb.DeviceStatusResponse(status="x" * (128 * 1024)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await status.read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await still_healthy(healthy, 1)


async def test_oversized_metadata_is_refused(target: Target, healthy: DeviceClient) -> None:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{target.server.port}", channel_credentials(target.tls)
    ) as ch:
        metadata = (("authorization", f"Bearer {target.token}"), ("x-padding", "p" * (16 * 1024)))
        call = pb_grpc.DeviceServiceStub(ch).ServerAudioStream(
            pb.AudioStreamRequest(start=True), metadata=metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await still_healthy(healthy, 1)


async def test_too_many_concurrent_calls_per_device(target: Target, healthy: DeviceClient) -> None:
    """The app-level cap per identity holds across connections (HTTP/2's own cap is per connection)."""
    metadata = (("authorization", f"Bearer {target.token}"),)
    creds = channel_credentials(target.tls)
    address = f"127.0.0.1:{target.server.port}"
    async with grpc.aio.secure_channel(address, creds) as one, grpc.aio.secure_channel(address, creds) as two:
        # Status streams: a session keeps only its newest audio stream, so those would free slots.
        calls = [
            pb_grpc.DeviceServiceStub(channel).StatusStream(metadata=metadata)
            for channel in (one, two)
            for _ in range(4)
        ]
        for call in calls:
            await asyncio.wait_for(call.initial_metadata(), CALL_TIMEOUT_S)
        before = auth_failures()
        async with grpc.aio.secure_channel(address, creds) as three:
            extra = pb_grpc.DeviceServiceStub(three).ServerAudioStream(
                pb.AudioStreamRequest(start=True), metadata=metadata
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(extra.read(), CALL_TIMEOUT_S)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert counted_since(before) == {"too_many_calls": 1}
        for call in calls:
            call.cancel()
    await still_healthy(healthy, 1)


async def test_connections_are_recycled_at_max_age(server_factory: ServerFactory, connect: Connect) -> None:
    """Max connection age forces fresh handshakes (so a revoked or rotated certificate cannot linger)."""
    app = await server_factory(max_connection_age_s=1.0, max_connection_age_grace_s=0.5)
    async with connect(app, "acme", "aged") as client:
        await client.press(MODE)
        await wait_for(lambda: len(client.ends) >= 3, timeout=10)
        assert {client.ends[k].code for k in ("status", "event", "audio")} == {grpc.StatusCode.UNAVAILABLE}


def test_hardening_options_reach_grpc(tmp_path: Path, pki: EphemeralPki) -> None:
    from server.app import grpc_options
    from tests.conftest import make_settings

    options = dict(
        grpc_options(make_settings(pki, tmp_path, keepalive_time_s=30, min_client_ping_interval_s=20))
    )
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 20_000
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.max_receive_message_length"] == 64 * 1024
    assert options["grpc.max_metadata_size"] == 8 * 1024
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.server_handshake_timeout_ms"] == 10_000
