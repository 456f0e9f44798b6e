"""Real-time playback of every device's sounds, independent of whether an audio stream is open.

* ``FrameClock``: one timer for the whole server. Every tick (half a frame) it
  offers each playing sound the packets that are due (one 20 ms packet per
  20 ms, sent ``lead`` ahead of real time). One timer instead of one per
  device keeps hundreds of streams cheap.
* ``Player``: one device's sound. Start offers the lead packets at once (Play
  is heard promptly); Stop removes the sound from the clock, drops what is
  still queued and sends a one-frame fade-out carrying ``is_end``, so the
  device hears the sound end within one frame. A live sound (a talk,
  ``live.py``) is pushed as its packets arrive instead; the clock only sees
  it end. A start may be given its
  timeline origin (an announcement starts every device at one instant) and a
  first packet (a sound resumed after an announcement: its first packet then
  carries ``is_start``); ``cut`` is a stop that says where to resume: the first
  packet the device never got.
* ``AudioChannel`` (audio_channel.py): the queue between a player and the
  device's ServerAudioStream, kept at the live edge; the timeline runs (and
  finishes) even with no channel.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from comms.audio_format import FRAME_MS, FRAME_SECONDS
from comms.gen import comms_pb2 as pb
from server import metrics
from server.audio.channel import AudioChannel
from server.audio.library import Clip
from server.audio.live import LiveFeed, LiveSound
from server.supervision import HealthCallback, TaskOwner

log = logging.getLogger(__name__)

TICK_SECONDS = FRAME_SECONDS / 2


class Sound:
    """One playing sound: its clip, its schedule and how far it got."""

    __slots__ = (
        "clip", "encoding", "end_sent", "first", "frame_s", "next_at", "player", "position", "sound_id", "t0"
    )  # fmt: skip

    def __init__(
        self,
        player: Player,
        sound_id: int,
        clip: Clip,
        t0: float,
        frame_ms: int = FRAME_MS,
        first: int = 0,
    ) -> None:
        self.player = player
        self.sound_id = sound_id
        self.clip = clip
        self.encoding = clip.encoding(frame_ms)  # 20 ms packets, or 60 ms for devices that asked
        self.frame_s = self.encoding.frame_s
        self.t0 = t0  # the sound's timeline origin: packet i is due at t0 + i·frame - lead
        self.first = first  # the packet it starts with (> 0: resumed after an announcement)
        self.position = first  # the next packet to offer
        self.end_sent = False
        self.next_at = -math.inf  # when the clock has something to do for it again (see ``advance``)

    @property
    def ends_at(self) -> float:
        return self.t0 + len(self.encoding.packets) * self.frame_s

    def advance(self, now: float, lead_s: float, limit: int | None = None) -> tuple[int, int]:
        """Offer every packet due by ``now`` (at most ``limit``); return (offered, late)."""
        messages = self.encoding.messages
        frame_s = self.frame_s
        last = len(messages) - 1
        offered = late = 0
        while self.position <= last and (limit is None or offered < limit):
            due = self.t0 + self.position * frame_s - lead_s
            if due > now:
                break
            if now - due > frame_s:
                late += 1
            index = self.position
            self.position += 1
            self.end_sent = index == last
            message = messages[index]
            if index == self.first and index > 0:  # a resumed sound begins here: it needs is_start
                message = pb.AudioPacket(is_start=True, is_end=message.is_end, data=message.data)
            self.player.offer(due + lead_s, message)
            offered += 1
        # The clock passes over it until then: its next packet is due, or (all offered) it ends.
        self.next_at = self.t0 + self.position * frame_s - lead_s if self.position <= last else self.ends_at
        return offered, late

    def fade_out(self, index: int) -> bytes:
        """A one-frame fade to silence from packet ``index`` (the last packet of a stopped sound)."""
        return self.clip.fade_out_packet(index, self.encoding.frame_ms)

    def retire(self) -> None:
        """Off the player (a clip's sound holds nothing else)."""


def count_packets(offered: int, late: int) -> None:
    """Metrics in batches: one counter update per tick, not per packet."""
    if offered:
        metrics.AUDIO_PACKETS_SENT.inc(offered)
    if late:
        metrics.AUDIO_LATE_PACKETS.inc(late)


class FrameClock:
    """The one timer that paces every sound on this server. Owned by the app: start/close."""

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self._sounds: set[Sound | LiveSound] = set()
        self._wake = asyncio.Event()
        self._tasks = TaskOwner("frame-clock")

    def start(self, on_failing: HealthCallback | None = None) -> None:
        self._tasks.supervise("frame-clock", self._run, on_failing)

    async def close(self) -> None:
        await self._tasks.close()

    def __len__(self) -> int:
        """Sounds on the clock."""
        return len(self._sounds)

    def add(self, sound: Sound | LiveSound) -> None:
        self._sounds.add(sound)
        self._wake.set()

    def discard(self, sound: Sound | LiveSound) -> None:
        self._sounds.discard(sound)

    def tick(self, now: float) -> None:
        """Offer what is due. A sound with nothing due (at 20 ms packets half of them on each tick,
        at 60 ms five in six) costs one comparison, not a call."""
        offered = late = 0
        for sound in list(self._sounds):
            if sound.next_at > now:
                continue
            sent, behind = sound.advance(now, self.lead_s)
            offered, late = offered + sent, late + behind
            if sound.end_sent and now >= sound.ends_at:
                self._sounds.discard(sound)
                sound.player.finished(sound)
        count_packets(offered, late)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._sounds:
                self._wake.clear()
                await self._wake.wait()
            self.tick(loop.time())
            await asyncio.sleep(TICK_SECONDS)


SoundFinishedCallback = Callable[[int], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted sound continues: its clip, and the seconds into it the device never got."""

    clip: Clip
    offset_s: float


class Player:
    """One device's playback: at most one sound at a time, paced by the shared clock."""

    def __init__(
        self, clock: FrameClock, on_finished: SoundFinishedCallback, log_fields: dict[str, str]
    ) -> None:
        self._clock = clock
        self._on_finished = on_finished
        self._log_fields = log_fields
        self._sound: Sound | LiveSound | None = None
        self._tasks = TaskOwner("player")  # the state machine hearing that a sound ended
        self.sink: AudioChannel | None = None
        self.frame_ms = FRAME_MS  # what the device's audio stream asked for (its session's choice)

    @property
    def playing(self) -> int | None:
        return self._sound.sound_id if self._sound else None

    def attach(self, channel: AudioChannel) -> AudioChannel | None:
        """Send packets to ``channel`` from now on; returns the channel it replaces, if any."""
        previous, self.sink = self.sink, channel
        return previous

    def detach(self, channel: AudioChannel) -> None:
        if self.sink is channel:
            self.sink = None

    def offer(self, due: float, packet: pb.AudioPacket) -> None:
        """``packet`` is due at the device at loop time ``due``."""
        if self.sink is not None:
            self.sink.put(due, packet)

    def start(self, sound_id: int, clip: Clip, t0: float | None = None, offset_s: float = 0.0) -> bool:
        """Play ``clip`` from ``offset_s`` with its timeline starting at loop time ``t0`` (now by
        default). False if nothing is left to play.

        A start at a given ``t0`` (an announcement: many devices at one instant) offers only the
        first packet at once and leaves the rest of the lead to the clock's next tick, half a frame
        later: every device's first packet goes out before any device's second."""
        if self._sound is not None:
            raise RuntimeError("start() while a sound is playing: stop it first")
        now = asyncio.get_running_loop().time()
        frame_s = clip.encoding(self.frame_ms).frame_s
        first = round(offset_s / frame_s)
        if first >= len(clip.encoding(self.frame_ms).packets):
            return False
        origin = (now if t0 is None else t0) - first * frame_s
        sound = Sound(self, sound_id, clip, t0=origin, frame_ms=self.frame_ms, first=first)
        self._sound = sound
        burst = None if t0 is None else 1  # else the lead goes out at once
        count_packets(*sound.advance(now, self._clock.lead_s, burst))
        self._clock.add(sound)
        metrics.SOUNDS_STARTED.inc()
        log.info(
            "sound.start",
            extra={
                **self._log_fields,
                "sound": sound_id,
                "clip": clip.name,
                "seconds": round(clip.duration, 2),
                "from_s": round(first * frame_s, 2),  # > 0: resumed after an announcement
            },
        )
        return True

    def start_live(self, sound_id: int, feed: LiveFeed) -> None:
        """Play ``feed`` (a talk) from its live edge, each packet pushed as it arrives."""
        if self._sound is not None:
            raise RuntimeError("start_live() while a sound is playing: stop it first")
        sound = LiveSound(self, sound_id, feed)
        self._sound = sound
        feed.join(sound)
        count_packets(sound.push(asyncio.get_running_loop().time()), 0)
        self._clock.add(sound)
        metrics.SOUNDS_STARTED.inc()
        log.info(
            "sound.start", extra={**self._log_fields, "sound": sound_id, "clip": feed.name, "live": True}
        )

    def cut(self, sound_id: int, reason: str) -> ResumePoint | None:
        """Stop the sound like ``stop``; where to resume it: the first packet the device never got
        (those still queued for its stream are dropped here). None if it is not playing."""
        sound = self._sound
        if sound is None or sound.sound_id != sound_id:
            return None
        undelivered = self.stop(sound_id, reason)
        if isinstance(sound, LiveSound):
            return None  # a talk is live: nothing of it comes back later
        return ResumePoint(sound.clip, (sound.position - undelivered) * sound.frame_s)

    def stop(self, sound_id: int, reason: str) -> int:
        """End the sound now: off the clock, queued packets dropped, a fade-out with is_end sent.
        Returns how many of its packets were dropped before reaching the stream."""
        sound = self._sound
        if sound is None or sound.sound_id != sound_id:
            return 0
        self._sound = None
        self._clock.discard(sound)
        sound.retire()
        dropped = 0
        if not sound.end_sent:
            if self.sink is not None:
                dropped = self.sink.discard_pending()
            fade = sound.fade_out(sound.position - dropped)
            now = asyncio.get_running_loop().time()
            is_start = sound.position - dropped == sound.first  # the device never got its start
            self.offer(now, pb.AudioPacket(is_start=is_start, is_end=True, data=fade))
        metrics.SOUNDS_STOPPED.labels(reason=reason).inc()
        log.info(
            "sound.stop",
            extra={
                **self._log_fields,
                "sound": sound_id,
                "reason": reason,
                "at_s": round((sound.position - dropped) * sound.frame_s, 2),
            },
        )
        return dropped

    def finished(self, sound: Sound | LiveSound) -> None:
        """Called by the clock at the sound's real end; the state machine hears of it in a task."""
        if self._sound is not sound:
            return
        self._sound = None
        sound.retire()
        log.info("sound.finished", extra={**self._log_fields, "sound": sound.sound_id})
        self._tasks.spawn(self._on_finished(sound.sound_id), f"finished-{sound.sound_id}")

    async def close(self) -> None:
        """Take the sound off the clock and await the pending callbacks (owner's shutdown)."""
        if self._sound is not None:
            self._clock.discard(self._sound)
            self._sound.retire()
            self._sound = None
        await self._tasks.close()
