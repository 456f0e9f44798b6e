"""Devices that can decode 60 ms packets ask for them and get a third of the messages; others get 20 ms."""

from __future__ import annotations

import time

import jwt

from comms.audio_format import BYTES_PER_SAMPLE
from device.audio_sink import RecordingSink
from server.app import AudioServer
from server.audio.library import AudioLibrary
from tests.conftest import Connect
from tests.helpers import MODE, PLAY, STOP, best_correlation, wait_for


def samples(chunk: bytes) -> int:
    return len(chunk) // BYTES_PER_SAMPLE


async def test_a_device_asking_for_60_ms_gets_60_ms_packets_that_decode(
    server: AudioServer, connect: Connect, library: AudioLibrary
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "long-frames", sink=sink, max_frame_ms=60) as device:
        assert device.session is not None
        assert jwt.decode(device.session.token, options={"verify_signature": False})["fms"] == 60
        for _ in range(2):
            await device.press(MODE)  # mode 2: the 2 s sweep
        await device.press(PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=5)
        sound = sink.sounds[0]
        assert {samples(chunk) for chunk in sound.chunks} == {2880}  # every packet: one 60 ms Opus frame
        clip = library.clip_for(2)
        assert sound.packets == len(clip.encoding(60).packets) == -(-len(clip.pcm) // 2880)
        assert best_correlation(sound.pcm, clip.pcm) > 0.9
        refreshed = await device.create_session(refresh=True)  # a refresh keeps the choice
        assert jwt.decode(refreshed.token, options={"verify_signature": False})["fms"] == 60


async def test_a_device_that_says_nothing_gets_todays_20_ms_stream(
    server: AudioServer, connect: Connect
) -> None:
    sink = RecordingSink()
    async with connect(
        server, "acme", "fielded", sink=sink
    ) as device:  # max_frame_ms unset, like old firmware
        for _ in range(2):
            await device.press(MODE)
        await device.press(PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=5)
        assert {samples(chunk) for chunk in sink.sounds[0].chunks} == {960}


async def test_stop_ends_a_60_ms_stream_within_one_frame(server: AudioServer, connect: Connect) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "long-stop", sink=sink, max_frame_ms=60) as device:
        await device.press(MODE)  # mode 1: the long sound
        await device.press(PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets > 10)
        await device.press(STOP)
        acked = time.monotonic()
        await wait_for(lambda: sink.sounds[0].ended, timeout=2)
        sound = sink.sounds[0]
        assert sound.arrivals[-1] - acked <= 0.060 + 0.005  # the fade frame with is_end, within one frame
        assert samples(sound.chunks[-1]) == 2880  # the fade is one 60 ms frame too
