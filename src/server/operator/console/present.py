"""A device as the console shows it: every fact in words, LEDs as colour classes with text beside.

The same dictionary renders the pages (Jinja2) and feeds the live updates
(``/events``, JSON), so a row drawn by the server and a row updated by the
script never disagree.
"""

from __future__ import annotations

import time
from typing import Any

from comms.gen import admin_pb2 as apb
from comms.renewal_words import renewal_words
from server.fleet.device_view import colour_name

CERT_WARN_DAYS = 30


def ago(unix: float, now: float) -> str:
    if not unix:
        return "never"
    seconds = max(0.0, now - unix)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(unix)) + " UTC"


def state_of(device: apb.Device) -> str:
    if device.revoked:
        return "revoked"
    if device.online:
        return "online"
    return "offline" if device.last_seen_unix or device.last_disconnect_reason else "never seen"


def present(device: apb.Device, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    playing = None
    if device.HasField("playing"):
        playing = {
            "mode": device.playing.mode,
            "position": round(device.playing.position_s, 1),
            "length": round(device.playing.length_s, 1),
            "text": f"mode {device.playing.mode}: {device.playing.position_s:.0f} of "
            f"{device.playing.length_s:.0f} s"
            if device.playing.length_s
            else f"live (push-to-talk): {device.playing.position_s:.0f} s",
        }
    days = device.cert_days_left if device.HasField("cert_days_left") else None
    renewal, renewal_warn = (
        renewal_words(device.renewal, now) if device.HasField("renewal") else ("unknown", False)
    )
    return {
        "key": f"{device.tenant}/{device.device_id}",
        "tenant": device.tenant,
        "device_id": device.device_id,
        "state": state_of(device),
        "online": device.online,
        "revoked": device.revoked,
        "node": device.node or "-",
        "mode": device.mode,
        "playing": playing,
        "playing_text": playing["text"] if playing else "idle",
        "battery": f"{device.battery_level:.0%}" if device.HasField("battery_level") else "unknown",
        "last_seen": "now" if device.online else ago(device.last_seen_unix, now),
        "connected_since": ago(device.connected_since_unix, now) if device.online else "-",
        "last_end": device.last_disconnect_reason or "-",
        "cert": f"{days} days" if days is not None else "unknown",
        # A device that renews itself is flagged only when renewal goes wrong; one without renewal
        # facts (not seen since renewal came) when its certificate is close to its end.
        "cert_warn": renewal_warn
        or (not device.HasField("renewal") and days is not None and days < CERT_WARN_DAYS),
        "renewal": renewal,
        "renewal_warn": renewal_warn,
        "cert_serial": device.cert_serial or "-",
        "session_id": device.session_id or "-",
        "buttons": ", ".join(device.buttons) or "unknown",
        "labels": [{"key": label.key, "value": label.value} for label in device.labels],
        "labels_text": " ".join(f"{label.key}={label.value}" for label in device.labels) or "-",
        "leds": [
            {"index": led.index, "cls": colour_name(led.rgba), "label": led.label} for led in device.leds
        ],
    }
