"""Where decoded audio goes. The client decodes Opus; a sink receives 48 kHz mono int16 PCM.

``RecordingSink`` keeps every sound (PCM, packet count, arrival times) and can
write each one to a WAV file: it is how tests and the demo "hear" the device.
A sounddevice sink for the Pi's speaker comes with the full client.

Plain buffers only (``array``, the standard ``wave`` module): the device installs without numpy or
libsndfile, which 32-bit Raspberry Pi OS would have to build or fetch from a third-party index.
"""

from __future__ import annotations

import sys
import time
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from comms.audio_format import BYTES_PER_SAMPLE, CHANNELS, SAMPLE_RATE


class AudioSink(Protocol):
    def start_sound(self) -> None: ...
    def write(self, pcm: bytes, is_end: bool) -> None: ...
    def end_sound(self) -> None: ...
    def cut_sound(self) -> None:
        """The sound stopped without its end (power off, disconnect, revocation)."""


@dataclass
class RecordedSound:
    index: int
    chunks: list[bytes] = field(default_factory=list, repr=False)
    arrivals: list[float] = field(default_factory=list, repr=False)  # monotonic time of each packet
    ended: bool = False  # saw is_end (not cut off by a new is_start or a disconnect)
    wav_path: Path | None = None

    @property
    def packets(self) -> int:
        return len(self.chunks)

    @property
    def pcm(self) -> array[int]:
        """The samples (signed 16-bit, native order, as the decoder wrote them)."""
        samples = array("h")
        samples.frombytes(b"".join(self.chunks))
        return samples

    @property
    def duration(self) -> float:
        return sum(len(c) for c in self.chunks) / BYTES_PER_SAMPLE / SAMPLE_RATE


class RecordingSink:
    """Records sounds in memory; with ``out_dir`` also writes one WAV per sound.

    Files are named ``<label>-<YYYYmmdd-HHMMSS>-<n>.wav`` (label: tenant-device), so two
    devices recording into one directory, or two runs, never overwrite each other; a
    sound that was cut off (power off, disconnect, a new sound) is saved too, as
    ``...-partial.wav``.
    """

    def __init__(self, out_dir: Path | None = None, label: str = "sound") -> None:
        self.out_dir = out_dir
        self.label = label
        self.sounds: list[RecordedSound] = []
        self._current: RecordedSound | None = None
        self._run = time.strftime("%Y%m%d-%H%M%S")

    @property
    def current(self) -> RecordedSound | None:
        return self._current

    def start_sound(self) -> None:
        self._finish()
        self._current = RecordedSound(len(self.sounds) + 1)
        self.sounds.append(self._current)

    def write(self, pcm: bytes, is_end: bool) -> None:
        if self._current is None:  # packets outside a sound (joined mid-sound): keep them anyway
            self.start_sound()
        assert self._current is not None
        self._current.chunks.append(pcm)
        self._current.arrivals.append(time.monotonic())

    def end_sound(self) -> None:
        if self._current is not None:
            self._current.ended = True
        self._finish()

    def cut_sound(self) -> None:
        self._finish()

    def _finish(self) -> None:
        sound, self._current = self._current, None
        if sound is not None and self.out_dir is not None and sound.chunks:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            partial = "" if sound.ended else "-partial"
            sound.wav_path = self.out_dir / f"{self.label}-{self._run}-{sound.index:03d}{partial}.wav"
            write_wav(sound.wav_path, sound.pcm)

    def close(self) -> None:
        self._finish()


def write_wav(path: Path, samples: array[int]) -> None:
    """A 16-bit PCM WAV at the service's rate (WAV data is little-endian whatever the host)."""
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(CHANNELS)
        out.setsampwidth(BYTES_PER_SAMPLE)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())


class NullSink:
    """Discards audio (a device without a speaker)."""

    def start_sound(self) -> None:
        return None

    def write(self, pcm: bytes, is_end: bool) -> None:
        return None

    def end_sound(self) -> None:
        return None

    def cut_sound(self) -> None:
        return None
