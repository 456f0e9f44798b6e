"""Device-side connection failures explained in one line, against a real server and real TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from auth import pki as pki_lib
from auth.identity import Identity
from auth.tls import TlsMaterial
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from device.diagnose import explain
from server.app import AudioServer
from tests.helpers import EphemeralPki

OTHER_CA = pki_lib.create_ca("Another Fleet CA")


def wrong_ca_on_device(p: EphemeralPki) -> TlsMaterial:
    good = p.device_tls("acme", "dev-1")
    return TlsMaterial(good.cert_pem, good.key_pem, OTHER_CA.cert_pem())


def foreign_device_cert(p: EphemeralPki) -> TlsMaterial:
    device = pki_lib.issue_device_cert(OTHER_CA, Identity("acme", "dev-1"))
    return TlsMaterial(device.cert_pem(), device.key_pem(), p.ca.cert_pem())


# case -> (target, device TLS, server name override, words the explanation must contain)
Case = tuple[Callable[[AudioServer], str], Callable[[EphemeralPki], TlsMaterial], str | None, str]
CASES: dict[str, Case] = {
    "a plaintext port (health)": (
        lambda s: f"127.0.0.1:{s.health.port}",  # type: ignore[union-attr]
        lambda p: p.device_tls("acme", "dev-1"),
        None,
        "did not answer with TLS",
    ),
    "server certificate from another CA": (
        lambda s: f"127.0.0.1:{s.port}",
        wrong_ca_on_device,
        None,
        "not signed by this device's CA",
    ),
    "server name mismatch": (
        lambda s: f"127.0.0.1:{s.port}",
        lambda p: p.device_tls("acme", "dev-1"),
        "audio.example.com",
        "does not name the host",
    ),
    "the server refuses the device certificate": (
        lambda s: f"127.0.0.1:{s.port}",
        foreign_device_cert,
        None,
        "does not accept this device's certificate",
    ),
    "nothing listening": (
        lambda s: "127.0.0.1:1",
        lambda p: p.device_tls("acme", "dev-1"),
        None,
        "nothing listens",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_common_failure_is_one_line_with_a_hint(
    case: str, server: AudioServer, pki: EphemeralPki
) -> None:
    target, tls, server_name, words = CASES[case]
    client = DeviceClient(target(server), tls(pki), RecordingSink(), server_name=server_name)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(client.connect(), 15)
    finally:
        await client.close()
    line = explain(info.value.code(), info.value.details() or "")
    assert line is not None and words in line, (info.value.details(), line)
    assert "\n" not in line


def test_unknown_failures_keep_grpc_words() -> None:
    assert explain(grpc.StatusCode.UNAVAILABLE, "something new") is None
    assert explain(grpc.StatusCode.PERMISSION_DENIED, "Socket closed") is None  # not a connection failure
