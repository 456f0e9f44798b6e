from __future__ import annotations

import pytest

from server.devices.leds import LED1_IDLE, LED1_PLAYING, MAX_MODES, OFF, leds_for, mode_leds, rgba
from tests.helpers import mode_of


def test_rgba_packing() -> None:
    assert rgba(0x112233, 0x44) == 0x11223344


def test_every_mode_is_distinct_and_lit() -> None:
    frames = [mode_leds(m) for m in range(MAX_MODES)]
    assert len(set(frames)) == MAX_MODES
    for mode, frame in enumerate(frames):
        assert sum(1 for c in frame if c != OFF) == 1  # one LED lit: readable at a glance
        assert frame != (OFF,) * 4  # never looks like "disconnected"
        assert mode_of([0, 0, *frame]) == mode


def test_led1_distinguishes_idle_playing_and_disconnected() -> None:
    assert len({LED1_IDLE, LED1_PLAYING, OFF}) == 3
    assert leds_for(0, False).led_1 == LED1_IDLE
    assert leds_for(0, True).led_1 == LED1_PLAYING


def test_out_of_range_mode_rejected() -> None:
    with pytest.raises(ValueError):
        mode_leds(MAX_MODES)
