"""The audio format on the wire: Opus, 48 kHz, mono, 20 ms packets, 16-bit PCM decoded."""

from __future__ import annotations

SAMPLE_RATE = 48_000
CHANNELS = 1
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000  # 960
FRAME_SECONDS = FRAME_MS / 1000
BYTES_PER_SAMPLE = 2  # int16
MAX_OPUS_PACKET = 1275  # RFC 6716 upper bound for one frame
