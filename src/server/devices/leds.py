"""The LED table: what the server shows on led_1 .. led_5 for a device state.

led_0 (power) belongs to the device and is never set by the server.
led_1 is the connection/state indicator. led_2 .. led_5 are the four mode LEDs
(square, rhomboid, triangle, circle): mode ``m`` lights LED ``2 + m % 4`` in
colour ``MODE_PALETTE[m // 4]``, so every mode (mode 0 included) lights exactly
one LED and is distinct from "disconnected" (all off).
"""

from __future__ import annotations

from dataclasses import dataclass

MODE_LEDS = 4  # led_2 .. led_5
FULL = 0xFF


def rgba(rgb: int, intensity: int = FULL) -> int:
    """Pack 0xRRGGBB and an intensity 0..255 into the wire's 0xRRGGBBAA."""
    return ((rgb & 0xFFFFFF) << 8) | (intensity & 0xFF)


OFF = 0x00000000
LED1_IDLE = rgba(0x00FF00, 0x60)  # dim green: connected, idle
LED1_PLAYING = rgba(0x0080FF, FULL)  # bright blue: connected, a sound is playing
MODE_PALETTE = (
    rgba(0xFFFFFF),  # modes 0..3: white
    rgba(0xFFA000),  # modes 4..7: amber
    rgba(0xFF00FF),  # modes 8..11: magenta
    rgba(0x00FFFF),  # modes 12..15: cyan
)
MAX_MODES = MODE_LEDS * len(MODE_PALETTE)


@dataclass(frozen=True, slots=True)
class LedFrame:
    """Colours for led_1 .. led_5 (0xRRGGBBAA each). led_0 is absent on purpose."""

    led_1: int
    led_2: int
    led_3: int
    led_4: int
    led_5: int

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.led_1, self.led_2, self.led_3, self.led_4, self.led_5)


def mode_leds(mode: int) -> tuple[int, int, int, int]:
    if not 0 <= mode < MAX_MODES:
        raise ValueError(f"mode {mode} outside 0..{MAX_MODES - 1}")
    colours = [OFF] * MODE_LEDS
    colours[mode % MODE_LEDS] = MODE_PALETTE[mode // MODE_LEDS]
    return colours[0], colours[1], colours[2], colours[3]


def leds_for(mode: int, playing: bool) -> LedFrame:
    return LedFrame(LED1_PLAYING if playing else LED1_IDLE, *mode_leds(mode))
