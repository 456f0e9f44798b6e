"""Real-time playback on the device: Opus packets in, 20 ms PCM frames out through a jitter buffer.

``JitterPlayer.on_packet`` runs on the event loop; ``pull`` runs at the
output's pace (the sounddevice callback thread on a Pi, ``PacedOutput`` for
sinks without a clock of their own), so the queue is guarded by a lock and
nothing in ``pull`` waits.

* ``is_start`` begins a fresh sound: queued audio is flushed, the decoder reset.
* Output starts once ``jitter_frames`` are queued (or the sound already ended).
* ``is_end`` drains what is queued, then the sound ends.
* Stop: when the server acks the device's own Stop (or Play), the sound's
  queued audio is dropped so only the server's fade-out frame is heard —
  silence at once instead of after the lead the server sent ahead.
* An empty queue mid-sound is an underrun: counted, silence played, no crash.
* The queue is bounded (``max_frames``, a few hundred ms past the jitter
  buffer): audio arriving in a burst after an outage drops the oldest frames,
  counted, so playback is never more than that behind real time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Literal

import opuslib

from comms.audio_format import (
    BYTES_PER_SAMPLE,
    CHANNELS,
    FRAME_SECONDS,
    MAX_FRAME_SAMPLES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
)
from comms.gen import comms_pb2 as pb
from comms.tasks import cancel_and_wait
from device.audio_sink import AudioSink

log = logging.getLogger(__name__)

DEFAULT_JITTER_FRAMES = 3  # 60 ms
FRAME_BYTES = SAMPLES_PER_FRAME * BYTES_PER_SAMPLE  # one 20 ms output frame of int16 PCM
DEFAULT_MAX_BEHIND_FRAMES = 15  # 300 ms beyond the jitter buffer
Boundary = Literal["start", "end", "cut"] | None  # cut: a sound ended without its is_end


class JitterPlayer:
    def __init__(
        self, jitter_frames: int = DEFAULT_JITTER_FRAMES, max_behind_frames: int = DEFAULT_MAX_BEHIND_FRAMES
    ) -> None:
        self.jitter_frames = max(1, jitter_frames)
        self.max_frames = self.jitter_frames + max(1, max_behind_frames)
        self.dropped_frames = 0  # oldest audio dropped to stay within max_frames of real time
        self._decoder = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._active = False  # a sound is open (between is_start and its drained end)
        self._started = False  # its output began (jitter buffer filled)
        self._ended = False  # its is_end arrived
        self._interrupt_pending = False
        self._last_chunks = 1  # 20 ms frames the last packet decoded to (3 for a 60 ms packet)
        self._cut = False  # a started sound was silenced (power off, disconnect): tell the output once
        self.generation = 0  # counts sounds (is_start); an interrupt targets one of them
        self.underruns = 0
        self._sound_underruns = 0
        self.packets = 0

    @property
    def playing(self) -> bool:
        return self._active

    # --- network side (event loop) ---

    def on_packet(self, packet: pb.AudioPacket) -> None:
        self.packets += 1
        if packet.is_start:
            self._decoder = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
        pcm = self._decoder.decode(packet.data, MAX_FRAME_SAMPLES)  # 20 ms, or 60 ms if we asked
        chunks = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)] or [pcm]
        with self._lock:
            if packet.is_start or not self._active:
                self._queue.clear()
                self._active, self._started, self._ended = True, False, False
                self._interrupt_pending = False
                self.generation += 1
            self._queue.extend(chunks)  # the output pulls 20 ms at a time, whatever the packet length
            self._last_chunks = len(chunks)
            while len(self._queue) > self.max_frames:
                self._queue.popleft()  # behind by more than the bound: the oldest audio goes
                self.dropped_frames += 1
                if self.dropped_frames == 1 or self.dropped_frames % 50 == 0:
                    log.warning("playback.behind", extra={"dropped_frames": self.dropped_frames})
            if packet.is_end:
                self._ended = True
                if self._interrupt_pending:
                    self._drop_all_but_last()
                    self._interrupt_pending = False

    def interrupt(self, generation: int) -> None:
        """The server accepted our Stop/Play: the sound that was playing then must not be heard on.

        ``generation`` is the player's generation when the button was pressed: a sound
        that started since (a Play's own new sound) is left alone.
        """
        with self._lock:
            if not self._active or generation != self.generation:
                return
            if self._ended:
                self._drop_all_but_last()  # keep the fade-out frame
            else:
                self._interrupt_pending = True  # its is_end (the fade) is still on the way

    def _drop_all_but_last(self) -> None:
        """Keep only the last packet's audio (the server's fade-out frame)."""
        while len(self._queue) > self._last_chunks:
            self._queue.popleft()

    def silence_now(self) -> None:
        """Disconnected or powered off: nothing more plays."""
        with self._lock:
            self._cut = self._cut or (self._active and self._started)
            self._queue.clear()
            self._active = False
            self._interrupt_pending = False

    # --- output side (audio thread or PacedOutput) ---

    def pull(self) -> tuple[bytes | None, Boundary]:
        """The next 20 ms frame (None = silence) and whether a sound starts or ended with it."""
        with self._lock:
            if self._cut:
                self._cut = False
                return None, "cut"
            if not self._active:
                return None, None
            boundary: Boundary = None
            if not self._started:
                if len(self._queue) < self.jitter_frames and not self._ended:
                    return None, None  # still buffering
                self._started = True
                boundary = "start"
            if self._queue:
                return self._queue.popleft(), boundary
            if self._ended:
                self._active = False
                if self._sound_underruns:
                    log.warning(
                        "playback.underruns",
                        extra={"frames": self._sound_underruns, "jitter_frames": self.jitter_frames},
                    )
                self._sound_underruns = 0
                return None, "end"
            self.underruns += 1
            self._sound_underruns += 1
            return None, boundary


class PacedOutput:
    """A 20 ms clock for sinks without one (WAV recording, null): pulls frames in real time."""

    def __init__(self, player: JitterPlayer, sink: AudioSink) -> None:
        self._player = player
        self._sink = sink
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="paced-output")

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    def step(self) -> None:
        frame, boundary = self._player.pull()
        if boundary == "start":
            self._sink.start_sound()
        if frame is not None:
            self._sink.write(frame, is_end=False)
        if boundary == "end":
            self._sink.end_sound()
        if boundary == "cut":
            self._sink.cut_sound()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.step()
            due += FRAME_SECONDS
            await asyncio.sleep(max(0.0, due - loop.time()))
