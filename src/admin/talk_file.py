"""``audio-admin talk``: an audio file said live through the ``Talk`` call, in real time.

The file is decoded the way the server decodes uploads (libsndfile; mixed to
mono; soxr to 48 kHz; NaN or infinite samples refused), then streamed as 20 ms
frames paced on the clock: what a microphone would send, for scripts and tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from comms.audio_format import FRAME_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME
from comms.gen import admin_pb2 as apb

MIN_RATE, MAX_RATE = 8_000, 384_000  # as for uploads
MAX_CHANNELS = 8


class TalkFileError(Exception):
    """The file cannot be said; the message says why."""


def read_pcm(path: Path) -> npt.NDArray[np.int16]:
    """The file as 48 kHz mono int16, or ``TalkFileError``."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        if not path.exists():
            raise TalkFileError(f"{path}: file not found") from None
        raise TalkFileError(f"{path}: not a readable audio file ({exc})") from None
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise TalkFileError(
            f"{path}: the sample rate {info.samplerate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise TalkFileError(f"{path}: {info.channels} channels (1..{MAX_CHANNELS} are taken)")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if samples.size == 0:
        raise TalkFileError(f"{path}: the file holds no audio samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    if not np.isfinite(mono).all():
        raise TalkFileError(f"{path}: the audio holds NaN or infinite samples")
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


async def paced(start: apb.TalkStart, pcm: npt.NDArray[np.int16]) -> AsyncIterator[apb.TalkRequest]:
    """``start``, then one 20 ms frame every 20 ms (the last one padded with silence), then the end."""
    yield apb.TalkRequest(start=start)
    count = -(-len(pcm) // SAMPLES_PER_FRAME)
    padded = np.zeros(count * SAMPLES_PER_FRAME, dtype=np.int16)
    padded[: len(pcm)] = pcm
    loop = asyncio.get_running_loop()
    began = loop.time()
    for index in range(count):
        await asyncio.sleep(max(0.0, began + index * FRAME_SECONDS - loop.time()))
        yield apb.TalkRequest(
            pcm=padded[index * SAMPLES_PER_FRAME : (index + 1) * SAMPLES_PER_FRAME].tobytes()
        )
    yield apb.TalkRequest(end=True)
