"""Real-time playback of one device's sounds, independent of whether its audio stream is open.

The ``Player`` runs a sound's timeline (one 20 ms packet per 20 ms, after a
small lead) and offers each packet to the device's ``AudioChannel`` if one is
attached. Stop cancels the timeline and sends a short fade-out packet that
carries ``is_end``, so the device hears the sound end within one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from comms import comms_pb2 as pb
from comms.audio_format import FRAME_SECONDS
from server import metrics
from server.audio_library import Clip

log = logging.getLogger(__name__)

CHANNEL_LIMIT = 250  # 5 s of packets: far beyond the lead, only reached by a stuck stream


class AudioChannel:
    """The outbound packets of one ServerAudioStream; dropped rather than grown without bound."""

    def __init__(self, limit: int = CHANNEL_LIMIT) -> None:
        self._queue: asyncio.Queue[pb.AudioPacket | None] = asyncio.Queue(limit + 1)  # +1: end marker
        self._limit = limit
        self.dropped = 0

    def put(self, packet: pb.AudioPacket) -> None:
        if self._queue.qsize() >= self._limit:
            self.dropped += 1
            metrics.AUDIO_PACKETS_DROPPED.inc()
            return
        self._queue.put_nowait(packet)

    def close(self) -> None:
        """After what is queued, ``get`` returns None: the stream ends once the device has it all."""
        self._queue.put_nowait(None)

    def discard_pending(self) -> int:
        """Drop packets not yet handed to gRPC (a stopped sound must not keep playing)."""
        count = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            count += 1
        return count

    async def get(self) -> pb.AudioPacket | None:
        return await self._queue.get()


SoundFinishedCallback = Callable[[int], Awaitable[None]]


class _Sound:
    __slots__ = ("clip", "end_sent", "position", "sound_id", "task")

    def __init__(self, sound_id: int, clip: Clip) -> None:
        self.sound_id = sound_id
        self.clip = clip
        self.position = 0  # packets offered so far
        self.end_sent = False
        self.task: asyncio.Task[None] | None = None


class Player:
    """Owns the timeline task of the one sound a device plays at a time."""

    def __init__(self, on_finished: SoundFinishedCallback, lead_s: float, log_fields: dict[str, str]) -> None:
        self._on_finished = on_finished
        self._lead_s = lead_s
        self._log_fields = log_fields
        self._sound: _Sound | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sink: AudioChannel | None = None
        self.late_packets = 0

    @property
    def playing(self) -> int | None:
        return self._sound.sound_id if self._sound else None

    def attach(self, channel: AudioChannel) -> None:
        self.sink = channel

    def detach(self, channel: AudioChannel) -> None:
        if self.sink is channel:
            self.sink = None

    def _offer(self, packet: pb.AudioPacket) -> None:
        if self.sink is not None:
            self.sink.put(packet)
            metrics.AUDIO_PACKETS_SENT.inc()

    def start(self, sound_id: int, clip: Clip) -> None:
        if self._sound is not None:
            raise RuntimeError("start() while a sound is playing: stop it first")
        sound = _Sound(sound_id, clip)
        sound.task = asyncio.create_task(self._run(sound), name=f"sound-{sound_id}")
        self._tasks.add(sound.task)
        sound.task.add_done_callback(self._tasks.discard)
        self._sound = sound
        metrics.SOUNDS_STARTED.inc()
        log.info(
            "sound.start",
            extra={
                **self._log_fields,
                "sound": sound_id,
                "clip": clip.name,
                "seconds": round(clip.duration, 2),
            },
        )

    def stop(self, sound_id: int, reason: str) -> None:
        """End the sound now: cancel its timeline, drop queued packets, send the fade with is_end."""
        sound = self._sound
        if sound is None or sound.sound_id != sound_id:
            return
        self._sound = None
        if sound.task is not None:
            sound.task.cancel()
        if not sound.end_sent:
            if self.sink is not None:
                self.sink.discard_pending()
            self._offer(
                pb.AudioPacket(
                    is_start=sound.position == 0,
                    is_end=True,
                    data=sound.clip.fade_out_packet(sound.position),
                )
            )
        metrics.SOUNDS_STOPPED.labels(reason=reason).inc()
        log.info(
            "sound.stop",
            extra={
                **self._log_fields,
                "sound": sound_id,
                "reason": reason,
                "at_s": round(sound.position * FRAME_SECONDS, 2),
            },
        )

    async def _run(self, sound: _Sound) -> None:
        loop = asyncio.get_running_loop()
        packets = sound.clip.packets
        last = len(packets) - 1
        t0 = loop.time()
        for index, data in enumerate(packets):
            delay = t0 + index * FRAME_SECONDS - self._lead_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_SECONDS:
                self.late_packets += 1
                metrics.AUDIO_LATE_PACKETS.inc()
            sound.end_sent = index == last
            sound.position = index + 1
            self._offer(pb.AudioPacket(is_start=index == 0, is_end=index == last, data=data))
        # Leave the timeline at the sound's real end, not when the lead ran out.
        await asyncio.sleep(max(0.0, t0 + len(packets) * FRAME_SECONDS - loop.time()))
        if self._sound is sound:
            self._sound = None
            log.info("sound.finished", extra={**self._log_fields, "sound": sound.sound_id})
            await self._on_finished(sound.sound_id)

    async def close(self) -> None:
        """Cancel and await every timeline task (owner's shutdown)."""
        self._sound = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
