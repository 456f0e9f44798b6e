"""Refused TLS handshakes are counted and logged in our format (C-core alone only writes stderr)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from auth import pki as pki_lib
from auth.identity import Identity
from auth.tls import TlsMaterial
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.app import AudioServer
from tests.conftest import Connect
from tests.helpers import MODE, EphemeralPki, sample


async def test_refused_handshakes_are_counted_and_logged(
    server: AudioServer, pki: EphemeralPki, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    server.handshakes.check()  # start from a clean window
    failed_before = sample("audio_tls_handshakes_total", outcome="failed")
    foreign = pki_lib.issue_device_cert(pki_lib.create_ca("Foreign"), Identity("acme", "dev-1"))
    tls = TlsMaterial(foreign.cert_pem(), foreign.key_pem(), pki.ca.cert_pem())
    for _ in range(3):
        client = DeviceClient(f"127.0.0.1:{server.port}", tls, RecordingSink())
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(client.connect(), 10)
        await client.close()
    async with connect(server, "acme", "fine") as fine:  # a good one is not counted as failed
        await fine.press(MODE)
    assert server.handshakes.check() == 3
    assert sample("audio_tls_handshakes_total", outcome="failed") == failed_before + 3
    (line,) = [r for r in caplog.records if r.getMessage() == "tls.handshakes_failed"]
    assert line.count == 3  # type: ignore[attr-defined]
    assert server.handshakes.check() == 0  # reported once
