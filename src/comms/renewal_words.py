"""A device's certificate renewal in words, the same in ``audio-admin`` and the console.

From ``admin_pb2.DeviceRenewal`` (the server's facts): "renews in N days" while all is well, and
a flag when the last renewal was refused or the device is past two thirds of its certificate's
lifetime without having renewed (it was off, or cannot reach the server, or keeps being refused).
"""

from __future__ import annotations

import time

from comms.gen import admin_pb2 as apb


def renewal_words(renewal: apb.DeviceRenewal, now: float | None = None) -> tuple[str, bool]:
    """(words, whether an operator should look)."""
    now = time.time() if now is None else now
    if renewal.failure:
        return f"renewal failed ({renewal.failure}) {_ago(now - renewal.failed_at_unix)}", True
    if renewal.overdue:
        return "past two thirds of its lifetime without renewing", True
    if not renewal.HasField("renews_in_days"):
        return "renewal time unknown (connect once)", False
    days = renewal.renews_in_days
    if days <= 0:
        return "renews within a day", False
    return f"renews in {days} day{'s' if days != 1 else ''}", False


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))} min ago"
    if seconds < 2 * 86_400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86_400)} days ago"
