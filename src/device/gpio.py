"""The device's hardware through gpiozero: 4 buttons and 6 RGB LEDs.

Works with real pins on a Raspberry Pi and with gpiozero's ``MockFactory``
anywhere else (tests, the simulator). gpiozero calls back on its own threads:
events are handed to the asyncio loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gpiozero import RGBLED, Button

LED_COUNT = 6
BUTTON_COUNT = 4
PRESS, HOLD, RELEASE = 0, 1, 2  # ButtonEvent.ButtonEventType
PRESSED, RELEASED = 0, 1  # DeviceStatus.ButtonStatus
FULL = 255.0

ButtonCallback = Callable[[int, int], None]  # (button index 0..3 = BUTTON_1..4, event type)


def rgba_to_rgb(rgba: int) -> tuple[float, float, float]:
    """0xRRGGBBAA -> PWM duty cycles; AA scales all three (it is the intensity)."""
    alpha = (rgba & 0xFF) / FULL
    return (
        ((rgba >> 24) & 0xFF) / FULL * alpha,
        ((rgba >> 16) & 0xFF) / FULL * alpha,
        ((rgba >> 8) & 0xFF) / FULL * alpha,
    )


class Board:
    """Buttons and LEDs. ``led_rgba`` reports what was last set (the wire's 0xRRGGBBAA)."""

    def __init__(
        self,
        button_pins: Sequence[int],
        led_pins: Sequence[tuple[int, int, int]],
        on_button: ButtonCallback,
        loop: asyncio.AbstractEventLoop,
        *,
        pin_factory: Any = None,
        hold_time_s: float = 1.0,
        bounce_time_s: float | None = 0.02,
    ) -> None:
        if len(button_pins) != BUTTON_COUNT or len(led_pins) != LED_COUNT:
            raise ValueError(f"need {BUTTON_COUNT} button pins and {LED_COUNT} RGB LED pin triples")
        self._loop = loop
        self._on_button = on_button
        self.buttons = [
            Button(
                pin, pull_up=True, bounce_time=bounce_time_s, hold_time=hold_time_s, pin_factory=pin_factory
            )
            for pin in button_pins
        ]
        for index, button in enumerate(self.buttons):
            button.when_pressed = self._callback(index, PRESS)
            button.when_held = self._callback(index, HOLD)
            button.when_released = self._callback(index, RELEASE)
        self.leds = [RGBLED(*pins, pwm=True, pin_factory=pin_factory) for pins in led_pins]
        self._rgba = [0] * LED_COUNT

    def _callback(self, index: int, kind: int) -> Callable[[], None]:
        def fire() -> None:  # runs on a gpiozero thread
            self._loop.call_soon_threadsafe(self._on_button, index, kind)

        return fire

    def set_led(self, index: int, rgba: int) -> None:
        self._rgba[index] = rgba
        self.leds[index].color = rgba_to_rgb(rgba)

    def led_rgba(self, index: int) -> int:
        return self._rgba[index]

    def all_off(self) -> None:
        for index in range(LED_COUNT):
            self.set_led(index, 0)

    def button_states(self) -> list[int]:
        return [PRESSED if button.is_pressed else RELEASED for button in self.buttons]

    def close(self) -> None:
        for device in [*self.buttons, *self.leds]:
            device.close()
