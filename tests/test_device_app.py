"""The Pi client end to end: mock GPIO pins, a recording sink, a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from auth.device_credentials import DeviceCredentials
from auth.identity import Identity
from auth.revocation import revoke
from device.app import POWER_LED, DeviceApp
from device.audio_sink import RecordingSink
from device.backoff import Backoff
from device.connection import LinkState
from device.gpio import HOLD, PRESS, RELEASE, rgba_to_rgb
from device.settings import DeviceSettings
from server.app import AudioServer
from server.audio.library import AudioLibrary
from server.devices import leds
from tests.conftest import ServerFactory
from tests.helpers import EphemeralPki, free_port, heard_clip, skipped_packets, wait_for
from tests.test_service_e2e import BARRIER_POLL_S, status_round_trip

BUTTON_PINS = [17, 27, 22, 23]
LED_PINS = [(5, 6, 13), (19, 26, 12), (16, 20, 21), (4, 18, 24), (25, 8, 7), (9, 10, 11)]
CONNECT, MODE, STOP, PLAY = range(4)


def led_color(factory: MockFactory, index: int) -> tuple[float, float, float]:
    return tuple(round(float(factory.pin(pin).state), 3) for pin in LED_PINS[index])  # type: ignore[return-value]


def expected(rgba: int) -> tuple[float, float, float]:
    return tuple(round(v, 3) for v in rgba_to_rgb(rgba))  # type: ignore[return-value]


async def tap(factory: MockFactory, button: int, hold_s: float = 0.02) -> None:
    pin = factory.pin(BUTTON_PINS[button])
    pin.drive_low()
    await asyncio.sleep(hold_s)
    pin.drive_high()
    await asyncio.sleep(0.01)


@asynccontextmanager
async def device_app(
    app_server: AudioServer, pki: EphemeralPki, device: str, **overrides: Any
) -> AsyncIterator[tuple[DeviceApp, MockFactory, RecordingSink]]:
    factory = MockFactory(pin_class=MockPWMPin)
    settings = DeviceSettings(
        server=f"127.0.0.1:{app_server.port}",
        tenant="acme",
        device=device,
        hold_time_s=overrides.pop("hold_time_s", 1.0),
        **overrides,
    )
    material = pki.device("acme", device)
    credentials = DeviceCredentials(
        pki.tls(material), Identity("acme", device), material.cert.not_valid_after_utc
    )
    sink = RecordingSink()
    backoff = overrides.get("backoff")
    app = DeviceApp(settings, credentials, sink, pin_factory=factory, backoff=backoff)
    await app.start()
    try:
        yield app, factory, sink
    finally:
        await app.close()
        factory.reset()


def connected(app: DeviceApp) -> Callable[[], bool]:
    return lambda: app.link == LinkState.CONNECTED


async def test_buttons_drive_the_server_and_leds_show_the_documented_colours(
    server: AudioServer, pki: EphemeralPki
) -> None:
    async with device_app(server, pki, "pi-leds") as (app, factory, _):
        await wait_for(connected(app))
        await wait_for(lambda: led_color(factory, 2) == expected(leds.MODE_PALETTE[0]))  # mode 0: square
        assert led_color(factory, 0) == expected(POWER_LED)
        assert led_color(factory, 1) == expected(leds.LED1_IDLE)
        await tap(factory, MODE)
        await wait_for(lambda: led_color(factory, 3) == expected(leds.MODE_PALETTE[0]))  # mode 1: rhomboid
        assert led_color(factory, 2) == (0.0, 0.0, 0.0)
        controller = server.registry.controller(Identity("acme", "pi-leds"))
        assert controller is not None and controller.state.mode == 1
        await tap(factory, CONNECT)  # power off: everything dark, streams closed
        await wait_for(
            lambda: not app.powered and all(led_color(factory, i) == (0.0, 0.0, 0.0) for i in range(6))
        )
        await wait_for(lambda: server.registry.controller(Identity("acme", "pi-leds")) is None)


async def test_press_hold_release_are_sent(server: AudioServer, pki: EphemeralPki) -> None:
    async with device_app(server, pki, "pi-hold", hold_time_s=0.1) as (app, factory, _):
        await wait_for(connected(app))
        await tap(factory, MODE, hold_s=0.3)
        await wait_for(lambda: len(app.sent) == 3)
        assert [(b, k, ack) for b, k, ack, _ in app.sent] == [
            (MODE, PRESS, True),
            (MODE, HOLD, True),
            (MODE, RELEASE, True),
        ]


async def test_play_is_heard_and_matches_the_clip(
    server: AudioServer, pki: EphemeralPki, library: AudioLibrary
) -> None:
    async with device_app(server, pki, "pi-play") as (app, factory, sink):
        await wait_for(connected(app))
        await tap(factory, MODE)
        await tap(factory, MODE)  # mode 2: the 2 s chirp
        skipped_before = skipped_packets()
        await tap(factory, PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=6)
        sound = sink.sounds[0]
        clip = library.clip_for(2)
        # all of it, but what the server's live edge skipped as late (a loaded machine)
        assert abs(sound.duration + (skipped_packets() - skipped_before) * 0.02 - clip.duration) < 0.1
        assert heard_clip(sound.pcm, clip.pcm)
        # Real time: the sink got the 2 s sound over about 2 s, not in a burst.
        assert sound.arrivals[-1] - sound.arrivals[0] > clip.duration - 0.2
        assert app.player.underruns == 0


@pytest.mark.parametrize("frame_ms", [20, 60])
async def test_stop_silences_within_two_frames_of_the_ack(
    server_factory: ServerFactory, pki: EphemeralPki, frame_ms: int
) -> None:
    """Within two packets of the ack: 40 ms with 20 ms packets, 120 ms with 60 ms packets."""
    server = await server_factory(status_poll_interval_s=BARRIER_POLL_S)
    async with device_app(server, pki, f"pi-stop-{frame_ms}", max_frame_ms=frame_ms) as (app, factory, sink):
        await wait_for(connected(app))
        await tap(factory, MODE)  # mode 1: the long sound
        await tap(factory, PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets > 25)
        await tap(factory, STOP)
        await wait_for(lambda: any(b == STOP for b, *_ in app.sent))
        acked_at = next(at for b, _, _, at in app.sent if b == STOP)
        await wait_for(lambda: sink.sounds[0].ended, timeout=2)
        assert sink.sounds[0].arrivals[-1] - acked_at <= 2 * frame_ms / 1000 + 0.005
        written = sink.sounds[0].packets
        client = app.manager.client
        assert client is not None
        await status_round_trip(client)  # a barrier, not a sleep
        controller = server.registry.controller(Identity("acme", f"pi-stop-{frame_ms}"))
        assert controller is not None and controller.record.playing is None  # the server plays nothing
        assert sink.sounds[0].packets == written and len(sink.sounds) == 1  # silence


async def test_reconnects_with_growing_delays_and_restores_mode(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path
) -> None:
    port = free_port()
    first = await server_factory(bind=f"127.0.0.1:{port}", state_backend="sqlite")
    ceilings: list[float] = []
    backoff = Backoff(0.1, 1.0, 10.0, uniform=lambda low, high: ceilings.append(high) or high)  # type: ignore[func-returns-value]
    async with device_app(first, pki, "pi-reconnect", backoff=backoff) as (app, factory, _):
        await wait_for(connected(app))
        await tap(factory, MODE)
        await tap(factory, MODE)
        await wait_for(lambda: led_color(factory, 4) != (0.0, 0.0, 0.0))  # mode 2
        await first.stop(grace_s=0.5)
        await wait_for(lambda: app.link != LinkState.CONNECTED)
        await wait_for(lambda: len(app.manager.attempts) >= 3, timeout=5)  # type: ignore[union-attr]
        down = app.link_history[app.link_history.index(LinkState.CONNECTED) + 1 :]
        assert LinkState.CONNECTING in down and LinkState.BACKOFF in down  # blinking, then dark, repeatedly
        await wait_for(lambda: app.link == LinkState.BACKOFF)
        assert led_color(factory, 1) == (0.0, 0.0, 0.0)  # disconnected: led_1 off
        assert led_color(factory, 4) == (0.0, 0.0, 0.0)  # no stale mode shown while disconnected
        await tap(factory, MODE)  # while down: not queued
        dropped = app.dropped_presses
        assert dropped >= 1
        second = await server_factory(bind=f"127.0.0.1:{port}", state_backend="sqlite")
        await wait_for(connected(app), timeout=5)
        await wait_for(lambda: led_color(factory, 4) != (0.0, 0.0, 0.0))  # mode 2 restored, not 3
        controller = second.registry.controller(Identity("acme", "pi-reconnect"))
        assert controller is not None and controller.state.mode == 2
        delays = [a.delay_s for a in app.manager.attempts]  # type: ignore[union-attr]
        assert delays[:3] == [0.1, 0.2, 0.4]  # exponential (full-jitter draws at their ceilings here)
        presses = [b for b, k, *_ in app.sent if k == PRESS]
        assert presses == [MODE, MODE]  # the press made while down never went out


async def test_revoked_device_stops_and_says_why(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crl = tmp_path / "crl.pem"
    app_server = await server_factory(crl_path=crl, reload_interval_s=0.05)
    async with device_app(app_server, pki, "pi-revoked", revoked_retry_s=600) as (app, _, _):
        await wait_for(connected(app))
        revoke(pki.ca, crl, [pki.device("acme", "pi-revoked").cert.serial_number])
        await wait_for(lambda: app.link == LinkState.REVOKED, timeout=3)
        assert app.manager is not None and app.manager.attempts[-1].delay_s == 600
    assert any(r.getMessage() == "device.revoked" for r in caplog.records)


async def test_token_is_refreshed_before_expiry(server_factory: ServerFactory, pki: EphemeralPki) -> None:
    app_server = await server_factory(token_ttl_s=3, token_leeway_s=0)
    async with device_app(app_server, pki, "pi-refresh") as (app, factory, _):
        await wait_for(connected(app))
        client = app.manager.client  # type: ignore[union-attr]
        assert client is not None and client.session is not None
        first = client.session
        await wait_for(lambda: client.session is not None and client.session.token != first.token, timeout=4)
        assert client.session.session_id == first.session_id
        assert time.time() < first.expires_at_unix  # refreshed before the old token expired
        await asyncio.sleep(1.5)  # past the first token's expiry: still connected, still served
        await tap(factory, MODE)
        await wait_for(lambda: any(k == PRESS and ack for _, k, ack, _ in app.sent))
        assert app.link == LinkState.CONNECTED


async def test_missing_ack_triggers_a_reconnect(
    server: AudioServer, pki: EphemeralPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.devices.controller import DeviceController

    real_press = DeviceController.press

    async def stuck(self: DeviceController, button: int, kind: int) -> None:
        await asyncio.sleep(3)  # the server never acks in time
        await real_press(self, button, kind)

    async with device_app(server, pki, "pi-noack", ack_timeout_s=0.3) as (app, factory, _):
        await wait_for(connected(app))
        monkeypatch.setattr(DeviceController, "press", stuck)
        await tap(factory, MODE)
        await wait_for(lambda: app.manager is not None and len(app.manager.attempts) >= 1, timeout=3)
        monkeypatch.undo()
        await wait_for(connected(app), timeout=5)  # back, with a fresh session
