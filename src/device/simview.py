"""The simulator's one-line view: six LEDs in their real colours plus what they mean, in 80 columns.

Pure: ``status_line`` takes what the device shows and returns the text; the
terminal loop redraws it in place (carriage return) on a terminal, or prints a
line per change when output is piped.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.gpio import rgba_to_rgb

SHAPES = ("square", "rhomboid", "triangle", "circle")  # led_2..led_5 on the case
LABELS = ("pwr", "link", "sq", "rh", "tri", "circ")
COLOUR_NAMES = {  # the colours the server uses, by 0xRRGGBB
    0xFFFFFF: "white",
    0xFFA000: "amber",
    0xFF00FF: "magenta",
    0x00FFFF: "cyan",
    0x00FF00: "green",
    0x0080FF: "blue",
    0xFF0000: "red",
}
WIDTH = 80
SWATCH = "  "  # two spaces with a background colour


@dataclass(frozen=True)
class View:
    leds: tuple[int, ...]  # 0xRRGGBBAA of led_0..led_5 as lit on the board
    powered: bool
    link: str  # connecting / connected / backoff / revoked
    retry_in_s: float | None
    playing: bool


def colour_name(rgba: int) -> str:
    return COLOUR_NAMES.get(rgba >> 8, f"#{rgba >> 8:06x}")


def swatch(rgba: int) -> str:
    r, g, b = (int(v * 255) for v in rgba_to_rgb(rgba))
    return f"\x1b[48;2;{r};{g};{b}m{SWATCH}\x1b[0m" if rgba else "\x1b[0m" + "··"


def meaning(view: View) -> str:
    if not view.powered:
        return "off"
    if view.link == "backoff":
        retry = f" {view.retry_in_s:.0f}s" if view.retry_in_s is not None else ""
        return f"link down, retry{retry}"
    if view.link != "connected":
        return {"connecting": "connecting...", "revoked": "certificate revoked"}.get(view.link, view.link)
    lit = [(SHAPES[i - 2], view.leds[i]) for i in range(2, 6) if view.leds[i]]
    mode = f"mode: {lit[0][0]} {colour_name(lit[0][1])}" if len(lit) == 1 else "mode: -"
    return f"{mode} | {'playing' if view.playing else 'idle'}"


def status_line(view: View) -> str:
    """At most WIDTH visible characters: ``pwr▇▇ link▇▇ sq▇▇ ... | <meaning>``."""
    cells = " ".join(f"{label}{swatch(rgba)}" for label, rgba in zip(LABELS, view.leds, strict=True))
    text = meaning(view)
    visible = len(" ".join(f"{label}{SWATCH}" for label in LABELS)) + 3
    return f"{cells} | {text[: WIDTH - visible]}"


def visible_length(line: str) -> int:
    """Length without ANSI colour sequences (what the terminal shows)."""
    out, skipping = 0, False
    for char in line:
        if char == "\x1b":
            skipping = True
        elif skipping and char == "m":
            skipping = False
        elif not skipping:
            out += 1
    return out
