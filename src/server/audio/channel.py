"""The outbound packets of one ServerAudioStream, kept at the live edge.

Real time means the device plays what is due now. Every packet carries the
time it is due at the device; one handed to gRPC more than ``max_late_s``
after that is skipped instead (a stream that stalled, a network outage, a
device that stopped reading), and counted. Skipping keeps the sound framing
the device relies on:

* a skipped ``is_start`` moves to the first packet delivered after it;
* a sound whose start was never delivered is skipped whole;
* a sound the device has open whose ``is_end`` was skipped still ends: a
  silent end frame goes out before anything else.

The queue is bounded too (``limit``): when full the oldest packet is skipped
(reason ``overflow``), never the newest, so the end of a sound is never lost.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque

import numpy as np

from comms.audio_format import SAMPLES_PER_FRAME
from comms.gen import comms_pb2 as pb
from server import metrics
from server.audio.opus import encode_fade_out

CHANNEL_LIMIT = 250  # 5 s of packets: far beyond the lead, only reached by a stuck stream
MAX_LATE_S = 0.2
END_MARKER_BITRATE = 16_000
WAIT = object()  # ``pop``: nothing to send yet
SKIPPED = {  # one labelled child per reason, looked up once: skips come in bursts
    reason: metrics.AUDIO_PACKETS_SKIPPED.labels(reason=reason) for reason in ("late", "overflow", "stopped")
}


@functools.cache
def end_marker() -> pb.AudioPacket:
    """One silent frame with ``is_end``: ends a sound whose own last packet was skipped."""
    silence = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
    return pb.AudioPacket(is_end=True, data=encode_fade_out(silence, END_MARKER_BITRATE))


class AudioChannel:
    def __init__(self, limit: int = CHANNEL_LIMIT, max_late_s: float = MAX_LATE_S) -> None:
        self._items: deque[tuple[float, pb.AudioPacket]] = deque()
        self._limit = limit
        self._max_late_s = max_late_s
        self._ready = asyncio.Event()
        self._closed = False
        self.replaced = False  # closed because a newer audio stream of the session took over
        self._device_open = False  # the device has a sound open (we delivered its start, not its end)
        self._start_owed = False  # the flowing sound's is_start was skipped: the next delivery carries it
        self._end_skipped = False  # an is_end was skipped since the last delivery

    def __len__(self) -> int:
        return len(self._items)

    def put(self, due: float, packet: pb.AudioPacket) -> None:
        """Queue ``packet``, due at the device at loop time ``due``."""
        if self._closed:
            return
        if len(self._items) >= self._limit:
            self._skip(*self._items.popleft(), reason="overflow")
        self._items.append((due, packet))
        self._ready.set()

    def close(self, replaced_by_newer: bool = False) -> None:
        """After what is queued (and still due), ``get`` returns None."""
        if not self._closed:
            self._closed = True
            self.replaced = replaced_by_newer
            self._ready.set()

    def discard_pending(self) -> int:
        """Drop packets not yet handed to gRPC (a stopped sound must not keep playing)."""
        count = len(self._items)
        while self._items:
            self._skip(*self._items.popleft(), reason="stopped")
        return count

    def pop(self, now: float) -> pb.AudioPacket | object | None:
        """Without waiting: the next packet still due at loop time ``now``, None once closed and
        drained, or ``WAIT`` when there is nothing to send yet (the stream's fast path: most
        packets are taken here, with no coroutine and no event wait per packet)."""
        while self._items:
            due, packet = self._items.popleft()
            if now - due > self._max_late_s:
                self._skip(due, packet, reason="late")
                continue
            return self._deliver(packet)
        if self._end_skipped and self._device_open:
            return self._deliver(end_marker())
        if self._closed:
            return None
        return WAIT

    async def get(self) -> pb.AudioPacket | None:
        """The next packet that is still due, or None once closed and drained."""
        loop = asyncio.get_running_loop()
        while (packet := self.pop(loop.time())) is WAIT:
            self._ready.clear()
            await self._ready.wait()
        return packet  # type: ignore[return-value]

    def _skip(self, due: float, packet: pb.AudioPacket, reason: str) -> None:
        SKIPPED[reason].inc()
        if reason == "overflow":
            metrics.AUDIO_PACKETS_DROPPED.inc()
        if packet.is_start:
            self._start_owed = True
        if packet.is_end:
            self._start_owed = False  # that sound is over; if it never started, the device heard nothing
            self._end_skipped = True

    def _deliver(self, packet: pb.AudioPacket) -> pb.AudioPacket:
        if self._start_owed and not packet.is_start:
            packet = pb.AudioPacket(is_start=True, is_end=packet.is_end, data=packet.data)
        self._start_owed = self._end_skipped = False
        if packet.is_start:
            self._device_open = True
        if packet.is_end:
            self._device_open = False
        return packet
