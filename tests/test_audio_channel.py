"""AudioChannel keeps a stream at the live edge without breaking the sound framing devices rely on."""

from __future__ import annotations

import asyncio

from comms.gen import comms_pb2 as pb
from server.audio.channel import WAIT, AudioChannel, end_marker
from tests.helpers import sample

LATE = 10.0  # seconds in the past: far beyond the 0.2 s bound


def packet(data: bytes, start: bool = False, end: bool = False) -> pb.AudioPacket:
    return pb.AudioPacket(is_start=start, is_end=end, data=data)


async def drain(channel: AudioChannel) -> list[pb.AudioPacket]:
    channel.close()
    out = []
    while (item := await channel.get()) is not None:
        out.append(item)
    return out


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_fresh_packets_pass_unchanged() -> None:
    channel = AudioChannel()
    sound = [packet(b"a", start=True), packet(b"b"), packet(b"c", end=True)]
    for p in sound:
        channel.put(now(), p)
    assert await drain(channel) == sound


async def test_stale_middle_is_skipped_and_counted() -> None:
    channel = AudioChannel()
    before = sample("audio_packets_skipped_total", reason="late")
    channel.put(now(), packet(b"a", start=True))
    for n in range(5):
        channel.put(now() - LATE, packet(bytes([n])))
    channel.put(now(), packet(b"z", end=True))
    assert [p.data for p in await drain(channel)] == [b"a", b"z"]
    assert sample("audio_packets_skipped_total", reason="late") == before + 5


async def test_a_skipped_start_moves_to_the_first_packet_delivered() -> None:
    channel = AudioChannel()
    channel.put(now() - LATE, packet(b"a", start=True))
    channel.put(now() - LATE, packet(b"b"))
    channel.put(now(), packet(b"c"))
    channel.put(now(), packet(b"d", end=True))
    out = await drain(channel)
    assert [(p.data, p.is_start, p.is_end) for p in out] == [(b"c", True, False), (b"d", False, True)]


async def test_an_open_sound_whose_end_was_skipped_still_ends() -> None:
    channel = AudioChannel()
    channel.put(now(), packet(b"a", start=True))
    assert (await channel.get()) is not None  # the device has the sound open
    channel.put(now() - LATE, packet(b"b"))
    channel.put(now() - LATE, packet(b"c", end=True))
    out = await drain(channel)
    assert out == [end_marker()] and out[0].is_end and out[0].data


async def test_a_sound_wholly_missed_is_not_sent_at_all() -> None:
    channel = AudioChannel()
    channel.put(now() - LATE, packet(b"a", start=True))
    channel.put(now() - LATE, packet(b"b", end=True))
    assert await drain(channel) == []


async def test_a_new_sound_after_a_skipped_end_begins_normally() -> None:
    channel = AudioChannel()
    channel.put(now(), packet(b"a", start=True))
    await channel.get()
    channel.put(now() - LATE, packet(b"b", end=True))
    channel.put(now() - LATE, packet(b"x", start=True))  # next sound, its start also stale
    channel.put(now(), packet(b"y"))
    out = await drain(channel)
    assert [(p.data, p.is_start) for p in out] == [(b"y", True)]  # its start implicitly ends the old one


async def test_overflow_drops_the_oldest_never_the_end() -> None:
    channel = AudioChannel(limit=4)
    channel.put(now(), packet(b"0", start=True))
    for n in range(1, 9):
        channel.put(now(), packet(bytes([n]), end=n == 8))
    out = await drain(channel)
    assert len(out) == 4 and out[0].is_start and out[-1].is_end and out[-1].data == bytes([8])


async def test_stop_discards_what_is_queued_and_the_fade_carries_the_start() -> None:
    channel = AudioChannel()
    channel.put(now(), packet(b"a", start=True))
    channel.put(now(), packet(b"b"))
    assert channel.discard_pending() == 2
    channel.put(now(), packet(b"fade", end=True))
    out = await drain(channel)
    assert [(p.data, p.is_start, p.is_end) for p in out] == [(b"fade", True, True)]


async def test_pop_takes_what_is_due_without_waiting_and_says_when_to_wait() -> None:
    """The stream's fast path: ``pop`` never waits; WAIT when empty and open, None once closed."""
    channel = AudioChannel()
    assert channel.pop(now()) is WAIT
    first, stale = packet(b"a", start=True), packet(b"b")
    channel.put(now() - LATE, stale)
    channel.put(now(), first)
    before = sample("audio_packets_skipped_total", reason="late")
    assert channel.pop(now()) == first  # the stale one skipped on the way, and counted
    assert sample("audio_packets_skipped_total", reason="late") == before + 1
    assert channel.pop(now()) is WAIT
    channel.close()
    assert channel.pop(now()) is None
