"""The Pi's speaker through sounddevice (PortAudio), imported lazily.

The PortAudio callback runs on its own thread and must never wait: it pulls
ready frames from the ``JitterPlayer`` (a short lock, no I/O) and plays
silence when there is none.
"""

from __future__ import annotations

import logging
from typing import Any

from comms.audio_format import BYTES_PER_SAMPLE, CHANNELS, SAMPLE_RATE, SAMPLES_PER_FRAME
from device.playback import JitterPlayer

log = logging.getLogger(__name__)

SILENCE = bytes(SAMPLES_PER_FRAME * BYTES_PER_SAMPLE)


class SpeakerUnavailable(RuntimeError):
    """sounddevice or PortAudio is missing, or the output device cannot be opened."""


class Speaker:
    def __init__(self, player: JitterPlayer, device: str | int | None = None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise SpeakerUnavailable(
                f"no speaker output ({exc}); install libportaudio2 and sounddevice (pi/install.sh does both)"
            ) from None
        self._player = player
        try:
            self._stream = sounddevice.RawOutputStream(
                samplerate=SAMPLE_RATE,
                channels=CHANNELS,
                dtype="int16",
                blocksize=SAMPLES_PER_FRAME,
                device=device,
                callback=self._callback,
                latency="low",
            )
        except Exception as exc:  # PortAudioError and friends: report, do not crash the client
            raise SpeakerUnavailable(f"cannot open audio output {device!r}: {exc}") from None

    def _callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        if status:
            log.debug("speaker.status", extra={"status": str(status)})
        frame, _ = self._player.pull()
        outdata[:] = frame if frame is not None and len(frame) == len(outdata) else SILENCE[: len(outdata)]

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
