"""``audio-device`` / ``python -m device``: a headless device connected to the server.

Reads button presses as lines on stdin (``m`` Mode, ``p`` Play, ``s`` Stop,
``q`` quit), prints LED changes, records sounds to WAV when asked. The GPIO
client for the Raspberry Pi builds on the same ``DeviceClient``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from auth.errors import AuthError
from auth.tls import load_tls_material
from comms.cli import parse_settings
from comms.logfmt import configure_logging
from device.audio_sink import AudioSink, NullSink, RecordingSink
from device.client import DeviceClient
from device.settings import DeviceSettings

log = logging.getLogger("device")
KEYS = {"m": 1, "s": 2, "p": 3}  # Mode = BUTTON_2, Stop = BUTTON_3, Play = BUTTON_4


def _show(leds: list[int]) -> None:
    print("LEDs " + " ".join(f"{c:08x}" for c in leds), flush=True)


async def run(settings: DeviceSettings) -> int:
    assert settings.cert and settings.key and settings.ca
    tls = load_tls_material(settings.cert, settings.key, settings.ca)
    sink: AudioSink = RecordingSink(settings.record_dir) if settings.record_dir else NullSink()
    client = DeviceClient(settings.server, tls, sink, on_leds=_show, server_name=settings.server_name)
    await client.connect()
    loop = asyncio.get_running_loop()
    try:
        while not client.closed.is_set():
            line = await loop.run_in_executor(None, sys.stdin.readline)
            key = line.strip().lower()[:1]
            if not line or key == "q":
                break
            if key in KEYS:
                await client.press(KEYS[key])
        for kind, end in client.ends.items():
            print(f"{kind} stream ended: {end.code.name} {end.details}", file=sys.stderr)
    finally:
        await client.close()
        if isinstance(sink, RecordingSink):
            sink.close()
    return 1 if client.ends else 0


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(DeviceSettings, "audio-device", argv)
    if settings is None:
        return 1
    configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(run(settings))
    except AuthError as exc:
        print(f"audio-device: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
