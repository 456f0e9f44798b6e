"""The stuck-write watchdog (issue 24): a device that stops reading its audio stream at the HTTP/2
level (its flow-control window never reopens) while it still answers on its status stream has its
whole session ended with UNAVAILABLE once a write has been stuck for ``audio_write_timeout_s``,
not before, and never not at all."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest

from auth.identity import Identity
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.devices.registry import STALLED_MESSAGE
from tests.conftest import ServerFactory
from tests.helpers import MODE, PLAY, EphemeralPki, sample, wait_for

WRITE_TIMEOUT_S = 2.5  # well above the watchdog's 1 s sweep: ending "too early" is visible
# The client's per-stream window: a few packets. Without BDP probing it never grows, and gRPC
# reopens it only as the application reads, so an unread stream blocks the server's writes.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


class NotReadingAudio(DeviceClient):
    """A device whose audio stream is opened and then never read (status and events still work)."""

    async def _play_audio(self, call: Any) -> None:
        await call.wait_for_connection()
        await asyncio.Event().wait()  # cancelled by close()


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    opened = grpc.aio.secure_channel

    def with_small_windows(target: str, credentials: grpc.ChannelCredentials, options: Any = ()) -> Any:
        return opened(target, credentials, options=[*options, *SMALL_WINDOW])

    monkeypatch.setattr(grpc.aio, "secure_channel", with_small_windows)


@pytest.mark.usefixtures("small_windows")
async def test_an_audio_stream_that_is_not_read_ends_the_session_after_the_write_timeout(
    server_factory: ServerFactory, pki: EphemeralPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.devices.registry")
    app = await server_factory(audio_write_timeout_s=WRITE_TIMEOUT_S)
    identity = Identity("acme", "deaf")
    device = NotReadingAudio(f"127.0.0.1:{app.port}", pki.device_tls("acme", "deaf"), RecordingSink())
    await device.connect()
    try:
        ended_before = sample("audio_sessions_ended_total", reason="stalled")
        await device.press(MODE)
        await device.press(PLAY)  # the 64 s sound of mode 1: far more than the window holds

        def write_pending() -> bool:
            controller = app.registry.controller(identity)
            return (
                controller is not None
                and controller.session is not None
                and controller.session.audio_write_pending
            )

        await wait_for(write_pending, timeout=5)
        await wait_for(lambda: {"status", "event"} <= set(device.ends), timeout=5 + 2 * WRITE_TIMEOUT_S)
        for stream in ("status", "event"):  # the device's other streams end with the session
            assert device.ends[stream].code == grpc.StatusCode.UNAVAILABLE, device.ends
            assert device.ends[stream].details == STALLED_MESSAGE
        await wait_for(lambda: app.registry.controller(identity) is None)  # the audio stream too
        assert sample("audio_sessions_ended_total", reason="stalled") == ended_before + 1
        (stalled,) = [r for r in caplog.records if r.getMessage() == "audio.stalled"]
        assert stalled.stuck_s >= WRITE_TIMEOUT_S  # ended because the write was stuck that long
    finally:
        await device.close()
