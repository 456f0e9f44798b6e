"""audio-device: the Raspberry Pi client of the audio service, or its simulator (--simulate).

On a Pi: GPIO buttons and LEDs (gpiozero), the speaker (sounddevice).
``--simulate``: mock pins, the 6 LEDs drawn in their real colours in the
terminal, keys for the buttons (c Connect, m Mode, s Stop, p Play, then
Enter; q quits), audio to the speakers if present, else to WAV files.
``audio-device enroll --server HOST:PORT --code CODE --ca-fingerprint SHA256:...``: get this
device's certificate with a one-time code first (its key is made here and never sent).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from comms.cli import parse_settings
from comms.logfmt import configure_logging
from device.exits import EXIT_PERMANENT
from device.settings import DeviceSettings

SIMULATE_HELP = (
    "Run without a Raspberry Pi: mock pins, the LEDs drawn in the terminal, keys for the buttons "
    "(c Connect, m Mode, s Stop, p Play, then Enter; q quits), sound to the speaker or WAV files. "
    "Needs gpiozero (pip install 'pi-audio-device[sim]', or 'pi-audio-service[device]' in a checkout). "
    "Command line only."
)
MISSING_DEPENDENCIES = (
    "audio-device: the device dependencies are not installed: on a Raspberry Pi run pi/install.sh "
    "(or pip install 'pi-audio-device[pi]'); for --simulate pip install 'pi-audio-device[sim]'"
)


def _device_dependencies_present() -> bool:
    try:
        import gpiozero  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["enroll"]:  # get a certificate with a one-time code (device.enrol)
        from device.enrol import main as enrol

        return enrol(args[1:])
    parsed = parse_settings(  # --help ends here: it needs none of the device dependencies
        DeviceSettings,
        "audio-device",
        argv,
        description=__doc__ or "",
        extra=[("--simulate", SIMULATE_HELP)],
    )
    if parsed is None:
        return EXIT_PERMANENT
    settings, flags = parsed
    if not _device_dependencies_present():  # the server image carries none of them
        print(MISSING_DEPENDENCIES, file=sys.stderr)
        return EXIT_PERMANENT
    from auth.device_credentials import CredentialError
    from device.runner import run

    simulate = bool(flags.simulate)
    configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(run(settings, simulate))
    except CredentialError as exc:
        print(f"audio-device: {exc}", file=sys.stderr)
        return EXIT_PERMANENT if exc.permanent else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
