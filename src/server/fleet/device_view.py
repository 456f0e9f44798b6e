"""What an operator sees of a device: its record, whether and where it is live, its LEDs in words.

Built by the node that holds the device (from its live record) for change
events on the bus, or by any node from the shared store and presence for
listings; the same ``DeviceView`` either way, JSON on the bus, ``admin_pb2.Device``
on the wire.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from auth.identity import Identity
from comms.gen import admin_pb2 as apb
from server.devices.leds import LED1_IDLE, LED1_PLAYING, MODE_PALETTE, OFF, leds_for
from server.state.store import DeviceRecord

BUTTON_STATES = {0: "pressed", 1: "released"}
RENEW_FRACTION = 2 / 3  # devices renew by this share of their certificate's lifetime (their default)
DAY_S = 86_400
LED_COLOURS = {  # rgba -> (a short name, e.g. a CSS class; words for people)
    OFF: ("off", "off"),
    LED1_IDLE: ("idle", "dim green (connected, idle)"),
    LED1_PLAYING: ("playing", "blue (playing)"),
    MODE_PALETTE[0]: ("white", "white"),
    MODE_PALETTE[1]: ("amber", "amber"),
    MODE_PALETTE[2]: ("magenta", "magenta"),
    MODE_PALETTE[3]: ("cyan", "cyan"),
}


def colour_name(rgba: int) -> str:
    """A short name for an LED colour of the LED table ("other" for any else)."""
    return LED_COLOURS.get(rgba, ("other", ""))[0]


def colour_words(rgba: int) -> str:
    """Words for an LED colour, so state is never shown by colour alone."""
    known = LED_COLOURS.get(rgba)
    return known[1] if known else f"#{rgba >> 8:06x}"


def renewal_of(record: DeviceRecord, now: float) -> apb.DeviceRenewal | None:
    """The renewal facts operators see: when it is due ("renews in N days"), whether the last
    attempt was refused after the last success, and whether the device is past two thirds of
    its certificate's lifetime without having renewed. None without a certificate on record."""
    if record.cert_expires is None:
        return None
    renewal = apb.DeviceRenewal(
        cert_expires_unix=record.cert_expires, renewed_at_unix=record.renewed_at or 0.0
    )
    if record.cert_issued is not None:
        due = record.cert_issued + (record.cert_expires - record.cert_issued) * RENEW_FRACTION
        renewal.cert_issued_unix = record.cert_issued
        renewal.renew_due_unix = due
        renewal.renews_in_days = math.floor((due - now) / DAY_S)
        renewal.overdue = now > due
    failed = record.renewal_failed_at
    if failed is not None and failed > (record.renewed_at or 0.0):
        renewal.failed_at_unix = failed
        renewal.failure = record.renewal_failure or "refused"
    return renewal


@dataclass(frozen=True)
class DeviceView:
    record: DeviceRecord
    online: bool
    node: str = ""

    @property
    def identity(self) -> Identity:
        return self.record.identity

    def leds(self) -> tuple[int, ...]:
        """led_1 .. led_5 as the server drives them; all off while the device is not connected."""
        if not self.online:
            return (OFF,) * 5
        return leds_for(self.record.mode, self.record.playing is not None).as_tuple()

    def to_data(self) -> dict[str, Any]:
        return {
            "tenant": self.identity.tenant,
            "device": self.identity.device_id,
            "online": self.online,
            "node": self.node,
            "record": self.record.fields(),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DeviceView:
        identity = Identity(str(data["tenant"]), str(data["device"]))
        record = DeviceRecord.from_fields(identity, dict(data["record"]))
        return cls(record, bool(data["online"]), str(data.get("node") or ""))

    def to_proto(self, now: float | None = None) -> apb.Device:
        now = time.time() if now is None else now
        record = self.record
        device = apb.Device(
            tenant=self.identity.tenant,
            device_id=self.identity.device_id,
            online=self.online,
            node=self.node if self.online else "",
            connected_since_unix=(record.connected_since or 0.0) if self.online else 0.0,
            last_seen_unix=record.last_seen or 0.0,
            last_disconnect_reason=record.disconnect_reason or "",
            mode=record.mode,
            cert_serial=f"{record.cert_serial:x}" if record.cert_serial is not None else "",
            session_id=record.session_id or "",
            revoked=record.revoked,
        )
        if self.online and record.playing is not None:
            mode, started, length = record.playing
            elapsed = max(0.0, now - started)  # a live talk has no length (0): how long it has run
            device.playing.CopyFrom(
                apb.Playing(
                    mode=mode, position_s=min(elapsed, length) if length else elapsed, length_s=length
                )
            )
        if record.battery_level is not None:
            device.battery_level = record.battery_level
        if record.buttons is not None:
            device.buttons.extend(BUTTON_STATES.get(b, "held") for b in record.buttons)
        if record.cert_expires is not None:
            device.cert_days_left = math.floor((record.cert_expires - now) / DAY_S)
        renewal = renewal_of(record, now)
        if renewal is not None:
            device.renewal.CopyFrom(renewal)
        for index, rgba in enumerate(self.leds(), start=1):
            device.leds.append(apb.Led(index=index, rgba=rgba, label=colour_words(rgba)))
        return device
