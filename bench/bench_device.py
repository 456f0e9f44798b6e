"""The Pi client on loopback: button press -> first audible sample at the sink, and its CPU while playing.

Runs the real DeviceApp (gpiozero mock pins, jitter buffer, 20 ms output clock,
recording sink) in this process against the benchmark server process.
"""

from __future__ import annotations

import asyncio
import resource
import time

from cryptography import x509
from gpiozero.pins.mock import MockFactory, MockPWMPin

from auth.device_credentials import DeviceCredentials
from auth.identity import Identity
from auth.tls import TlsMaterial
from device.app import DeviceApp
from device.audio_sink import RecordingSink
from device.connection import LinkState
from device.settings import DeviceSettings

ROUNDS = 30
PLAY_S = 0.3
CPU_WINDOW_S = 10.0
MODE_PIN, STOP_PIN, PLAY_PIN = 27, 22, 23


async def _press(factory: MockFactory, pin: int) -> float:
    started = time.monotonic()
    factory.pin(pin).drive_low()
    await asyncio.sleep(0.01)
    factory.pin(pin).drive_high()
    return started


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(0.001)


async def run(port: int, tls: TlsMaterial, device: str) -> tuple[list[float], float]:
    """(press -> first sample latencies in s, client CPU % while playing)."""
    factory = MockFactory(pin_class=MockPWMPin)
    settings = DeviceSettings(server=f"127.0.0.1:{port}", tenant="bench", device=device)
    cert = x509.load_pem_x509_certificate(tls.cert_pem)  # its dates: when the client would renew it
    credentials = DeviceCredentials(
        tls, Identity("bench", device), cert.not_valid_after_utc, not_before=cert.not_valid_before_utc
    )
    sink = RecordingSink()
    app = DeviceApp(settings, credentials, sink, pin_factory=factory)
    await app.start()
    try:
        await _until(lambda: app.link == LinkState.CONNECTED)
        await _press(factory, MODE_PIN)  # mode 1: the long sound
        await asyncio.sleep(0.2)
        latencies = []
        for _ in range(ROUNDS):
            count = len(sink.sounds)
            pressed = await _press(factory, PLAY_PIN)
            await _until(lambda c=count: len(sink.sounds) > c and bool(sink.sounds[-1].arrivals))
            latencies.append(sink.sounds[-1].arrivals[0] - pressed)
            await asyncio.sleep(PLAY_S)
            await _press(factory, STOP_PIN)
            await _until(lambda: sink.sounds[-1].ended)
            await asyncio.sleep(0.1)
        await _press(factory, PLAY_PIN)
        await asyncio.sleep(0.5)
        cpu_before, wall_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), time.monotonic()
        await asyncio.sleep(CPU_WINDOW_S)
        cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before
        cpu_pct = 100 * cpu / (time.monotonic() - wall_before)
    finally:
        await app.close()
        factory.reset()
    return latencies, cpu_pct
