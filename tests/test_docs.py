"""The docs document every setting and the LED table the code uses.

The settings tables are generated (``make reference``; ``tests/test_reference_docs.py`` keeps them
fresh); this checks the facts themselves, where each reader finds them: every setting under its
env name and flag in its program's reference page, and the LED colours in the device guide.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.settings import AdminSettings
from device.settings import DeviceSettings
from server.devices import leds
from server.runtime.settings import ServerSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"
SETTINGS_PAGES = {
    "AUDIO_SERVER_": DOCS / "reference" / "server-settings.md",
    "AUDIO_DEVICE_": DOCS / "reference" / "device-settings.md",
    "AUDIO_ADMIN_": DOCS / "reference" / "admin-settings.md",
}
LED_PAGE = DOCS / "device" / "buttons-and-leds.md"


@pytest.mark.parametrize(
    ("prefix", "name"),
    [("AUDIO_SERVER_", n) for n in ServerSettings.model_fields]
    + [("AUDIO_DEVICE_", n) for n in DeviceSettings.model_fields]
    + [("AUDIO_ADMIN_", n) for n in AdminSettings.model_fields],
)
def test_every_setting_is_documented(prefix: str, name: str) -> None:
    page = SETTINGS_PAGES[prefix].read_text()
    assert f"`{prefix}{name.upper()}`" in page
    assert f"`--{name.replace('_', '-')}`" in page


def test_led_colours_in_the_device_guide_match_the_code() -> None:
    page = LED_PAGE.read_text()
    for colour in (leds.LED1_IDLE, leds.LED1_PLAYING, *leds.MODE_PALETTE):
        assert f"0x{colour:08X}" in page
