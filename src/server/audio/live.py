"""Live sounds: a talk's Opus packets played as they arrive, not from a stored clip (issue 21).

* ``LiveFeed``: the packets of one live sound on one node, appended in order as
  they come in (from the caller, or over the fleet bus) and then an end. Every
  device of the node that plays the talk shares the one feed: the PCM is
  encoded once per talk, never per device.
* ``LiveSound``: one device's place in a feed. It is pushed: each packet goes
  to the device's channel the moment it is appended (due now: the device's own
  buffer absorbs the jitter), not on the frame clock's next tick, so the clock
  adds nothing to the mouth-to-device latency. The clock still holds the sound
  for its end: once the end went out the player hears it finished (and the
  sound the talk interrupted resumes). A device that joins a talk late starts
  at the live edge, with ``is_start`` on its first packet.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from comms.audio_format import FRAME_MS, FRAME_SECONDS
from comms.gen import comms_pb2 as pb
from server.audio.channel import end_marker

if TYPE_CHECKING:
    from server.audio.player import Player


class LiveFeed:
    """One talk's 20 ms packets on this node, as they arrive; ``end`` closes it."""

    frame_ms = FRAME_MS

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[pb.AudioPacket] = []
        self.ended = False
        self._sounds: set[LiveSound] = set()

    @property
    def duration(self) -> float:
        return len(self.messages) * FRAME_SECONDS

    def append(self, packet: bytes) -> None:
        if self.ended:
            return
        self.messages.append(pb.AudioPacket(data=packet))
        self._push()

    def end(self) -> None:
        """The talk is over: a silent frame with ``is_end`` closes the sound on every device."""
        if self.ended:
            return
        self.ended = True
        self.messages.append(end_marker())
        self._push()

    def join(self, sound: LiveSound) -> None:
        self._sounds.add(sound)

    def leave(self, sound: LiveSound) -> None:
        self._sounds.discard(sound)

    @property
    def listeners(self) -> int:
        return len(self._sounds)

    def _push(self) -> None:
        now = asyncio.get_running_loop().time()
        for sound in list(self._sounds):
            sound.push(now)


class LiveSound:
    """One device playing a ``LiveFeed`` (the player's sound while a talk is on air there)."""

    frame_s = FRAME_SECONDS

    def __init__(self, player: Player, sound_id: int, feed: LiveFeed) -> None:
        self.player = player
        self.sound_id = sound_id
        self.clip = feed
        self.first = self.position = len(feed.messages)  # the live edge: what is past is not replayed
        self.end_sent = False
        self._ended_at = math.inf
        self.next_at = -math.inf  # the clock looks at it on every tick until its end is sent

    @property
    def ends_at(self) -> float:
        return self._ended_at

    def advance(self, now: float, lead_s: float, limit: int | None = None) -> tuple[int, int]:
        """The clock's tick: anything appended and not pushed yet (normally nothing)."""
        return self.push(now), 0

    def push(self, now: float) -> int:
        messages = self.clip.messages
        offered = 0
        while self.position < len(messages) and not self.end_sent:
            message = messages[self.position]
            if self.position == self.first:
                message = pb.AudioPacket(is_start=True, is_end=message.is_end, data=message.data)
            self.position += 1
            if message.is_end:
                self.end_sent, self._ended_at = True, now + self.frame_s
                self.next_at = self._ended_at
            self.player.offer(now, message)
            offered += 1
        return offered

    def fade_out(self, index: int) -> bytes:
        """The last packet of a talk stopped on this device: a silent frame (the talk's PCM is not kept)."""
        return bytes(end_marker().data)

    def retire(self) -> None:
        self.clip.leave(self)
