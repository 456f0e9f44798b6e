"""Opus encoding of whole clips into 20 ms (or 60 ms) packets, and its on-disk cache.

Encoding a long clip takes a while, so it runs once per clip (off the event
loop, at start-up) and the packets are cached by the hash of the PCM and the
encoder parameters: a restart does not re-encode unchanged content.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import opuslib
import opuslib.api.info

from comms.audio_format import CHANNELS, MAX_OPUS_PACKET, SAMPLE_RATE, SAMPLES_PER_FRAME
from comms.files import write_atomic

log = logging.getLogger(__name__)

Int16Pcm = npt.NDArray[np.int16]
CACHE_FORMAT = b"OPUSPKT1"
CACHE_MODE = 0o600  # only the server reads its cache (encoded tenant content)
_LEN = struct.Struct("<H")


def to_int16(pcm: npt.NDArray[np.floating]) -> Int16Pcm:
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)


def frame_count(pcm: Int16Pcm, spf: int = SAMPLES_PER_FRAME) -> int:
    return max(1, -(-len(pcm) // spf))


def frames(pcm: Int16Pcm, spf: int = SAMPLES_PER_FRAME) -> list[Int16Pcm]:
    """Split into ``spf``-sample frames (960 = 20 ms), zero-padding the last one."""
    count = frame_count(pcm, spf)
    padded = np.zeros(count * spf, dtype=np.int16)
    padded[: len(pcm)] = pcm
    return list(padded.reshape(count, spf))


def new_encoder(bitrate: int) -> opuslib.Encoder:
    encoder = opuslib.Encoder(SAMPLE_RATE, CHANNELS, opuslib.APPLICATION_AUDIO)
    encoder.bitrate = bitrate
    return encoder


def encode(pcm: Int16Pcm, bitrate: int, spf: int = SAMPLES_PER_FRAME) -> list[bytes]:
    """Encode a clip with one encoder (continuous state across frames)."""
    encoder = new_encoder(bitrate)
    return [encoder.encode(frame.tobytes(), spf) for frame in frames(pcm, spf)]


def encode_fade_out(frame: Int16Pcm, bitrate: int, spf: int = SAMPLES_PER_FRAME) -> bytes:
    """One short frame that ramps ``frame`` down to silence: the last packet of a stopped sound."""
    ramp = np.linspace(1.0, 0.0, spf)
    faded = np.zeros(spf, dtype=np.int16)
    faded[: len(frame)] = frame[:spf]
    faded = (faded * ramp).astype(np.int16)
    return bytes(new_encoder(bitrate).encode(faded.tobytes(), spf))


def cache_key(pcm: Int16Pcm, bitrate: int, spf: int = SAMPLES_PER_FRAME) -> str:
    digest = hashlib.sha256(CACHE_FORMAT)
    digest.update(f"{opuslib.api.info.get_version_string().decode()}|{SAMPLE_RATE}|{spf}|{bitrate}|".encode())
    digest.update(pcm.tobytes())
    return digest.hexdigest()


def packed(packets: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Packets, each prefixed with its length: how encoded clips are kept (cache, shared store)."""
    return b"".join(_LEN.pack(len(p)) + p for p in packets)


def unpacked(blob: bytes, pos: int, count: int | None = None) -> tuple[list[bytes], int]:
    """``count`` packets (or all up to the end) from ``packed`` bytes at ``pos``, and where they end;
    ``ValueError`` if the bytes are not that."""
    packets: list[bytes] = []
    while (count is None and pos < len(blob)) or (count is not None and len(packets) < count):
        if pos + _LEN.size > len(blob):
            raise ValueError("truncated packet length")
        (size,) = _LEN.unpack_from(blob, pos)
        pos += _LEN.size
        if not 0 < size <= MAX_OPUS_PACKET or pos + size > len(blob):
            raise ValueError("bad packet length")
        packets.append(blob[pos : pos + size])
        pos += size
    return packets, pos


def _read_cache(path: Path) -> list[bytes] | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    if not blob.startswith(CACHE_FORMAT):
        return None
    try:
        packets, _ = unpacked(blob, len(CACHE_FORMAT))
    except ValueError:
        return None
    return packets or None


def _write_cache(path: Path, packets: list[bytes]) -> None:
    write_atomic(path, CACHE_FORMAT + packed(packets), CACHE_MODE)


def encode_cached(
    pcm: Int16Pcm, bitrate: int, cache_dir: Path | None, spf: int = SAMPLES_PER_FRAME
) -> tuple[list[bytes], bool]:
    """Return (packets, from_cache). A broken or unwritable cache only costs an encode."""
    if cache_dir is None:
        return encode(pcm, bitrate, spf), False
    path = cache_dir / f"{cache_key(pcm, bitrate, spf)}.opuspkt"
    cached = _read_cache(path)
    if cached is not None and len(cached) == frame_count(pcm, spf):
        return cached, True
    packets = encode(pcm, bitrate, spf)
    try:
        _write_cache(path, packets)
    except OSError as exc:
        log.warning("audio.cache_unwritable", extra={"path": str(path), "error": str(exc)})
    return packets, False
