"""Prometheus metrics of the service (documented in the README's metrics table).

Module-level collectors in the default registry: one process serves one
service. Labels are low-cardinality on purpose (no device ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTED_DEVICES = Gauge("audio_connected_devices", "Devices with a live session", ["tenant"])
OPEN_STREAMS = Gauge("audio_open_streams", "Open DeviceService streams", ["kind"])
SESSIONS_CREATED = Counter("audio_sessions_created_total", "CreateSession calls answered", ["kind"])
SESSIONS_OPENED = Counter("audio_sessions_opened_total", "Sessions whose streams opened")
SESSIONS_SUPERSEDED = Counter(
    "audio_sessions_superseded_total", "Sessions ended because the device connected again"
)
AUTH_FAILURES = Counter("audio_auth_failures_total", "Rejected calls", ["reason"])
EVENTS_RATE_LIMITED = Counter(
    "audio_events_rate_limited_total", "Button events acked with ack=false and not applied (rate limit)"
)
BUTTON_EVENTS = Counter("audio_button_events_total", "Button events received", ["button", "type"])
SOUNDS_STARTED = Counter("audio_sounds_started_total", "Sounds started")
SOUNDS_STOPPED = Counter("audio_sounds_stopped_total", "Sounds ended early", ["reason"])
AUDIO_PACKETS_SENT = Counter("audio_packets_sent_total", "Opus packets queued to devices")
AUDIO_PACKETS_DROPPED = Counter(
    "audio_packets_dropped_total", "Opus packets dropped because a device's stream was stuck"
)
AUDIO_LATE_PACKETS = Counter(
    "audio_late_packets_total", "Packets offered more than one frame behind schedule"
)
STATUS_ERRORS = Counter(
    "audio_status_errors_total",
    "Status responses that report an error or break the protocol",
    ["kind"],
)
BAD_MESSAGES = Counter(
    "audio_bad_messages_total", "Request messages that did not parse (answered INVALID_ARGUMENT)", ["method"]
)
