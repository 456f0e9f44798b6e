"""The simulator's status line: fits 80 columns, says what the LEDs mean, backoff is not 'off'."""

from __future__ import annotations

import pytest

from device.simview import View, meaning, status_line, visible_length
from server.devices.leds import LED1_IDLE, LED1_PLAYING, MAX_MODES, leds_for

POWER = 0x40FF4060


def connected(mode: int, playing: bool = False) -> View:
    frame = leds_for(mode, playing)
    return View((POWER, *frame.as_tuple()), True, "connected", None, playing)


@pytest.mark.parametrize("mode", range(MAX_MODES))
def test_every_mode_fits_80_columns_and_names_shape_and_colour(mode: int) -> None:
    view = connected(mode, playing=mode % 2 == 0)
    assert visible_length(status_line(view)) <= 80
    assert "mode: " in meaning(view) and meaning(view) != meaning(connected((mode + 4) % MAX_MODES))


def test_modes_0_and_4_differ_in_words_not_only_colour() -> None:
    assert "square white" in meaning(connected(0)) and "square amber" in meaning(connected(4))


def test_backoff_off_and_connecting_are_distinct() -> None:
    down = View((POWER, 0, 0, 0, 0, 0), True, "backoff", 3.4, False)
    off = View((0, 0, 0, 0, 0, 0), False, "backoff", 3.4, False)
    connecting = View((POWER, 0xFFA00080, 0, 0, 0, 0), True, "connecting", None, False)
    assert meaning(down) == "link down, retry 3s"
    assert meaning(off) == "off"  # not "[off | backoff | ...]"
    assert meaning(connecting) == "connecting..."
    assert "playing" in meaning(connected(1, playing=True)) and LED1_PLAYING != LED1_IDLE
