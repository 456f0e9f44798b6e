"""The README (and the operator docs under docs/) document every setting and the LED table the code uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.settings import AdminSettings
from device.settings import DeviceSettings
from server.devices import leds
from server.runtime.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = README + "".join(page.read_text() for page in sorted((ROOT / "docs").rglob("*.md")))


@pytest.mark.parametrize(
    ("prefix", "name"),
    [("AUDIO_SERVER_", n) for n in ServerSettings.model_fields]
    + [("AUDIO_DEVICE_", n) for n in DeviceSettings.model_fields]
    + [("AUDIO_ADMIN_", n) for n in AdminSettings.model_fields],
)
def test_every_setting_is_documented(prefix: str, name: str) -> None:
    assert f"`{prefix}{name.upper()}`" in DOCS
    assert f"`--{name.replace('_', '-')}`" in DOCS


def test_led_colours_in_readme_match_the_code() -> None:
    for colour in (leds.LED1_IDLE, leds.LED1_PLAYING, *leds.MODE_PALETTE):
        assert f"0x{colour:08X}" in README
