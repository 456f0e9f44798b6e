"""What ``audio-device`` runs once its settings are read: the Pi client or the simulator.

Imported only after the command line is parsed, so ``audio-device --help`` works on an install
without the device dependencies (gpiozero).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gpiozero.exc import GPIOZeroError, GPIOZeroWarning

from device.app import DeviceApp
from device.audio_sink import AudioSink, NullSink, RecordingSink
from device.exits import EXIT_PERMANENT
from device.renewal import CertificateFiles
from device.settings import DeviceSettings
from device.simview import View, meaning, status_line
from device.speaker import Speaker, SpeakerUnavailable

log = logging.getLogger("device")
KEYS = {"c": 0, "m": 1, "s": 2, "p": 3}
DEFAULT_SIM_RECORDINGS = Path("device-recordings")


def view_of(app: DeviceApp) -> View:
    assert app.board is not None
    attempts = app.manager.attempts if app.manager is not None else []
    return View(
        leds=tuple(app.board.led_rgba(i) for i in range(6)),
        powered=app.powered,
        link=app.link.value,
        retry_in_s=attempts[-1].delay_s if attempts else None,
        playing=app.player.playing,
    )


async def run(settings: DeviceSettings, simulate: bool) -> int:
    assert settings.cert and settings.key and settings.ca
    # The live pair, or the previous one if a renewal was cut between its writes (device.renewal).
    credentials = CertificateFiles(settings.cert, settings.key, settings.ca).load(settings.trust_domain)
    for warning in credentials.warnings:
        log.warning("device.credentials", extra={"warning": warning})
    log.info(
        "device.credentials_ok",
        extra={
            "tenant": credentials.identity.tenant,
            "device": credentials.identity.device_id,
            "cert_expires": credentials.not_after.isoformat(),
        },
    )
    pin_factory = None
    if simulate:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        pin_factory = MockFactory(pin_class=MockPWMPin)
    record_dir = settings.record_dir or (DEFAULT_SIM_RECORDINGS if simulate else None)
    label = f"{credentials.identity.tenant}-{credentials.identity.device_id}"
    sink: AudioSink = RecordingSink(record_dir, label) if record_dir else NullSink()
    app = DeviceApp(settings, credentials, sink, pin_factory=pin_factory)
    speaker: Speaker | None = None
    try:
        speaker = Speaker(app.player, settings.audio_device)
    except SpeakerUnavailable as exc:
        print(f"audio-device: {exc}; sounds go to {record_dir or 'nowhere'}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            # gpiozero warns once per pin library it tries; our one line below says what matters.
            warnings.simplefilter("ignore", GPIOZeroWarning)
            await app.start()
    except GPIOZeroError as exc:
        print(
            f"audio-device: no GPIO on this machine ({exc}); use --simulate off a Raspberry Pi",
            file=sys.stderr,
        )
        return EXIT_PERMANENT
    if speaker is not None:
        await app.output.close()  # the speaker's clock drives playback instead
        speaker.start()
    try:
        if simulate:
            await until_stopped(app, simulate_terminal(app, pin_factory))
        else:
            await app.stopped.wait()  # until SIGTERM/SIGINT, or the certificate expired
    finally:
        await app.close()
        if speaker is not None:
            speaker.close()
        if isinstance(sink, RecordingSink):
            sink.close()
    if app.exit_line is not None:  # e.g. an expired certificate: a new enrolment code is needed
        print(f"audio-device: {app.exit_line}", file=sys.stderr)
        return EXIT_PERMANENT
    return 0


async def until_stopped(app: DeviceApp, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or the app stops by itself."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(app.stopped.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)


async def simulate_terminal(app: DeviceApp, factory: object) -> None:
    loop = asyncio.get_running_loop()
    print("keys: c Connect  m Mode  s Stop  p Play  q quit (then Enter)")
    in_place = sys.stdout.isatty()  # a terminal: one line redrawn; piped: one line per change
    last = ""

    async def redraw() -> None:
        nonlocal last
        while True:
            view = view_of(app)
            line = status_line(view)
            key = line if in_place else meaning(view)  # piped: a line per change of meaning, not per blink
            if key != last:
                if in_place:
                    print(f"\r\x1b[2K{line}", end="", flush=True)
                else:
                    print(line, flush=True)
                last = key
            await asyncio.sleep(0.1)

    painter = asyncio.create_task(redraw())
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            key = line.strip().lower()[:1]
            if not line or key == "q":
                return
            if key in KEYS:
                pin = factory.pin(app.settings.button_pins[KEYS[key]])  # type: ignore[attr-defined]
                pin.drive_low()
                await asyncio.sleep(0.05)
                pin.drive_high()
    finally:
        painter.cancel()
