"""The content library: one encoded clip per mode, built once and shared by every device.

A content directory may hold ``mode-<N>.<ext>`` files (any format libsndfile
reads, any rate and channel count); they are converted to 48 kHz mono and
encoded. A missing directory, an unreadable, empty or ambiguous file is
reported and that mode falls back to its built-in default: the server starts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from comms.audio_format import FRAME_DURATIONS_MS, FRAME_MS, FRAME_SECONDS, SAMPLE_RATE, samples_per_frame
from comms.gen import comms_pb2 as pb
from server.audio.opus import Int16Pcm, encode_cached, encode_fade_out, to_int16
from server.audio.synth import default_sound

log = logging.getLogger(__name__)

DEFAULT_BITRATE = 64_000
CONTENT_FILE = re.compile(r"^mode-(?P<mode>\d{1,2})\.[A-Za-z0-9]+$")
NEAR_MISS = re.compile(r"^mode[-_ ]?(?P<mode>\d{1,2})\.[A-Za-z0-9]+$", re.IGNORECASE)  # mode1.wav, Mode-2.WAV


class ContentError(Exception):
    """A content file cannot be used; the message says why."""


@dataclass(frozen=True, eq=False)
class Encoding:
    """A clip as packets of one duration, and the wire messages built from them once."""

    frame_ms: int
    packets: tuple[bytes, ...] = field(repr=False)
    messages: tuple[pb.AudioPacket, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.packets:
            raise ValueError("a clip needs at least one packet")
        last = len(self.packets) - 1
        messages = tuple(
            pb.AudioPacket(is_start=i == 0, is_end=i == last, data=data)
            for i, data in enumerate(self.packets)
        )
        object.__setattr__(self, "messages", messages)

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000


@dataclass(frozen=True, eq=False)
class Clip:
    """A sound ready to stream: 48 kHz mono PCM, encoded at every packet duration in use
    (20 ms for every device, 60 ms for those that ask), shared by every device that plays it."""

    name: str
    source: str  # "builtin" or the file path
    pcm: Int16Pcm = field(repr=False)
    encodings: dict[int, Encoding] = field(repr=False)  # frame ms -> encoding
    bitrate: int = DEFAULT_BITRATE

    def encoding(self, frame_ms: int = FRAME_MS) -> Encoding:
        return self.encodings.get(frame_ms) or self.encodings[FRAME_MS]

    @property
    def packets(self) -> tuple[bytes, ...]:
        """The 20 ms packets (what every device can decode)."""
        return self.encoding(FRAME_MS).packets

    @property
    def duration(self) -> float:
        return len(self.packets) * FRAME_SECONDS

    def fade_out_packet(self, frame_index: int, frame_ms: int = FRAME_MS) -> bytes:
        """A one-frame fade to silence from where playback was interrupted (frame of that duration)."""
        spf = samples_per_frame(frame_ms)
        start = min(frame_index, len(self.encoding(frame_ms).packets) - 1) * spf
        return encode_fade_out(self.pcm[start : start + spf], self.bitrate, spf)


def read_audio_file(path: Path) -> Int16Pcm:
    """Decode any libsndfile format, mix to mono, resample to 48 kHz (soxr)."""
    if not path.is_file():
        raise ContentError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ContentError(f"{path}: the file is empty (0 bytes)")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise ContentError(f"{path}: unreadable audio ({exc})") from None
    try:
        return playable(data, rate)
    except ContentError as exc:
        raise ContentError(f"{path}: {exc}") from None


def playable(samples: npt.NDArray[np.float32], rate: int) -> Int16Pcm:
    """Decoded samples (frames x channels) as 48 kHz mono PCM: mixed, resampled (soxr), checked."""
    if samples.size == 0:
        raise ContentError("the file holds no audio samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    if not np.isfinite(mono).all():
        raise ContentError("the audio holds NaN or infinite samples")
    return to_int16(mono)


def ignored_because(path: Path) -> str:
    """Why a file in the content directory is not used, in words that point at the fix."""
    if path.is_dir():
        return "a directory (sub-directories are not searched)"
    near = NEAR_MISS.match(path.name)
    if near:
        return f"not named mode-<N>.<ext>: rename it to mode-{int(near['mode'])}{path.suffix.lower()}"
    return "not named mode-<N>.<ext> (e.g. mode-1.wav)"


def find_content(content_dir: Path, mode_count: int) -> dict[int, Path]:
    """Map modes to ``mode-<N>.*`` files; report anything that cannot be used."""
    if not content_dir.is_dir():
        log.error("audio.content_dir_missing", extra={"path": str(content_dir)})
        return {}
    found: dict[int, list[Path]] = {}
    for path in sorted(content_dir.iterdir()):
        match = CONTENT_FILE.match(path.name)
        if not match:
            if not path.name.startswith("."):  # say why a file that is there does nothing
                log.warning(
                    "audio.content_ignored", extra={"path": str(path), "reason": ignored_because(path)}
                )
            continue
        mode = int(match["mode"])
        if mode >= mode_count:
            log.warning("audio.content_mode_unused", extra={"path": str(path), "mode_count": mode_count})
            continue
        found.setdefault(mode, []).append(path)
    mapping = {}
    for mode, paths in found.items():
        if len(paths) > 1:
            log.error(
                "audio.content_ambiguous",
                extra={"mode": mode, "files": [str(p) for p in paths], "using": "builtin"},
            )
            continue
        mapping[mode] = paths[0]
    return mapping


def build_clip(name: str, source: str, pcm: Int16Pcm, bitrate: int, cache_dir: Path | None) -> Clip:
    encodings = {}
    for frame_ms in FRAME_DURATIONS_MS:
        frame_packets, cached = encode_cached(pcm, bitrate, cache_dir, samples_per_frame(frame_ms))
        encodings[frame_ms] = Encoding(frame_ms, tuple(frame_packets))
    packets = encodings[FRAME_MS].packets
    log.info(
        "audio.clip_ready",
        extra={
            "clip": name,
            "source": source,
            "seconds": round(len(packets) * FRAME_SECONDS, 2),
            "packets": len(packets),
            "cached": cached,
        },
    )
    return Clip(name, source, pcm, encodings, bitrate)


class ClipSource(Protocol):
    """What a Play of ``mode`` sounds like for ``tenant`` (the built-in library, or tenant sounds)."""

    async def clip(self, tenant: str, mode: int) -> Clip: ...


@dataclass(frozen=True)
class AudioLibrary:
    clips: tuple[Clip, ...]  # index = mode

    def clip_for(self, mode: int) -> Clip:
        return self.clips[mode % len(self.clips)]

    async def clip(self, tenant: str, mode: int) -> Clip:
        """Every tenant hears the built-in library (``TenantSounds`` adds uploads over it)."""
        return self.clip_for(mode)


def load_library(
    mode_count: int,
    content_dir: Path | None = None,
    cache_dir: Path | None = None,
    bitrate: int = DEFAULT_BITRATE,
) -> AudioLibrary:
    """Blocking (decode + encode): call it through ``asyncio.to_thread`` from the server."""
    files = find_content(content_dir, mode_count) if content_dir else {}
    clips = []
    for mode in range(mode_count):
        clip = None
        if mode in files:
            try:
                clip = build_clip(
                    f"mode-{mode}",
                    str(files[mode]),
                    read_audio_file(files[mode]),
                    bitrate,
                    cache_dir,
                )
            except ContentError as exc:
                log.error(
                    "audio.content_rejected",
                    extra={"mode": mode, "reason": str(exc), "using": "builtin"},
                )
        if clip is None:
            clip = build_clip(f"mode-{mode}", "builtin", to_int16(default_sound(mode)), bitrate, cache_dir)
        clips.append(clip)
    return AudioLibrary(tuple(clips))
