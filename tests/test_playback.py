"""The device's jitter-buffered player, driven frame by frame."""

from __future__ import annotations

import opuslib
import pytest

from comms.audio_format import CHANNELS, SAMPLE_RATE, SAMPLES_PER_FRAME
from comms.gen import comms_pb2 as pb
from device.playback import JitterPlayer

SILENT_PCM = bytes(SAMPLES_PER_FRAME * 2)


def packets(count: int, start: bool = True, end: bool = True) -> list[pb.AudioPacket]:
    encoder = opuslib.Encoder(SAMPLE_RATE, CHANNELS, opuslib.APPLICATION_AUDIO)
    data = [encoder.encode(SILENT_PCM, SAMPLES_PER_FRAME) for _ in range(count)]
    return [
        pb.AudioPacket(is_start=start and i == 0, is_end=end and i == count - 1, data=d)
        for i, d in enumerate(data)
    ]


def drain(player: JitterPlayer, steps: int) -> list[tuple[bool, str | None]]:
    out = []
    for _ in range(steps):
        frame, boundary = player.pull()
        out.append((frame is not None, boundary))
    return out


def test_buffers_then_plays_then_ends() -> None:
    player = JitterPlayer(jitter_frames=3)
    sound = packets(5)
    for packet in sound[:2]:
        player.on_packet(packet)
    assert drain(player, 2) == [(False, None), (False, None)]  # buffering
    for packet in sound[2:]:
        player.on_packet(packet)
    assert drain(player, 7) == [
        (True, "start"),
        (True, None),
        (True, None),
        (True, None),
        (True, None),
        (False, "end"),
        (False, None),
    ]
    assert player.underruns == 0


def test_short_sound_plays_without_filling_the_buffer() -> None:
    player = JitterPlayer(jitter_frames=3)
    for packet in packets(1):  # one packet, is_start and is_end
        player.on_packet(packet)
    assert drain(player, 2) == [(True, "start"), (False, "end")]


def test_underrun_is_counted_and_played_as_silence() -> None:
    player = JitterPlayer(jitter_frames=1)
    sound = packets(3)
    player.on_packet(sound[0])
    assert drain(player, 3) == [(True, "start"), (False, None), (False, None)]
    assert player.underruns == 2
    player.on_packet(sound[1])
    player.on_packet(sound[2])
    assert drain(player, 3) == [(True, None), (True, None), (False, "end")]


def test_new_sound_flushes_the_old_one() -> None:
    player = JitterPlayer(jitter_frames=1)
    for packet in packets(10, end=False):
        player.on_packet(packet)
    drain(player, 2)
    generation = player.generation
    for packet in packets(2):
        player.on_packet(packet)
    assert player.generation == generation + 1
    assert drain(player, 4) == [(True, "start"), (True, None), (False, "end"), (False, None)]


@pytest.mark.parametrize("ack_before_end", [True, False])
def test_interrupt_keeps_only_the_fade_frame(ack_before_end: bool) -> None:
    player = JitterPlayer(jitter_frames=1)
    sound = packets(20, end=False)
    for packet in sound:
        player.on_packet(packet)
    drain(player, 1)
    fade = packets(1, start=False)[0]  # the server's fade-out with is_end
    playing = player.generation
    if ack_before_end:
        player.interrupt(playing)
        player.on_packet(fade)
    else:
        player.on_packet(fade)
        player.interrupt(playing)
    assert drain(player, 3) == [(True, None), (False, "end"), (False, None)]  # one frame, then silence


def test_interrupt_leaves_a_newer_sound_alone() -> None:
    player = JitterPlayer(jitter_frames=1)
    old = player.generation
    for packet in packets(4):
        player.on_packet(packet)
    player.interrupt(old)  # pressed Play while idle: the new sound must play whole
    assert [f for f, _ in drain(player, 5)].count(True) == 4


def test_the_buffer_never_falls_further_behind_than_its_bound() -> None:
    """A burst after an outage (seconds of audio at once) keeps only the newest max_frames."""
    player = JitterPlayer(jitter_frames=3, max_behind_frames=15)
    for packet in packets(200, end=False):
        player.on_packet(packet)
    assert player.dropped_frames == 200 - 18
    frames = 0
    while player.pull()[0] is not None:
        frames += 1
    assert frames == 18  # 360 ms behind at most, not 4 s


def test_60_ms_packets_play_as_three_20_ms_frames() -> None:
    from comms.audio_format import LONG_FRAME_MS, samples_per_frame

    encoder = opuslib.Encoder(SAMPLE_RATE, CHANNELS, opuslib.APPLICATION_AUDIO)
    spf = samples_per_frame(LONG_FRAME_MS)
    data = [encoder.encode(bytes(spf * 2), spf) for _ in range(4)]
    player = JitterPlayer(jitter_frames=3)
    for i, payload in enumerate(data):
        player.on_packet(pb.AudioPacket(is_start=i == 0, is_end=i == 3, data=payload))
    frames = drain(player, 13)
    assert frames[:12] == [(True, "start")] + [(True, None)] * 11  # 4 packets x 3 frames, at 20 ms each
    assert frames[12] == (False, "end")


def test_an_interrupt_keeps_the_whole_60_ms_fade() -> None:
    from comms.audio_format import LONG_FRAME_MS, samples_per_frame

    encoder = opuslib.Encoder(SAMPLE_RATE, CHANNELS, opuslib.APPLICATION_AUDIO)
    spf = samples_per_frame(LONG_FRAME_MS)
    player = JitterPlayer(jitter_frames=1)
    player.on_packet(pb.AudioPacket(is_start=True, data=encoder.encode(bytes(spf * 2), spf)))
    generation = player.generation
    for _ in range(3):
        player.on_packet(pb.AudioPacket(data=encoder.encode(bytes(spf * 2), spf)))
    player.interrupt(generation)
    player.on_packet(pb.AudioPacket(is_end=True, data=encoder.encode(bytes(spf * 2), spf)))  # the fade
    assert drain(player, 4) == [(True, "start"), (True, None), (True, None), (False, "end")]
