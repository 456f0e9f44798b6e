"""The audio format on the wire: Opus, 48 kHz, mono, 20 ms packets (60 ms for devices that ask),
16-bit PCM decoded."""

from __future__ import annotations

SAMPLE_RATE = 48_000
CHANNELS = 1
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000  # 960
FRAME_SECONDS = FRAME_MS / 1000
BYTES_PER_SAMPLE = 2  # int16
MAX_OPUS_PACKET = 1275  # RFC 6716 upper bound for one frame
LONG_FRAME_MS = 60  # for devices whose CreateSession says max_frame_ms >= 60
FRAME_DURATIONS_MS = (FRAME_MS, LONG_FRAME_MS)
MAX_FRAME_SAMPLES = SAMPLE_RATE * 120 // 1000  # the longest Opus frame (120 ms): a safe decode buffer


def samples_per_frame(frame_ms: int) -> int:
    return SAMPLE_RATE * frame_ms // 1000
