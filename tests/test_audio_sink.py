"""Recordings: named per device and time, cut-off sounds saved and flagged."""

from __future__ import annotations

from pathlib import Path

import soundfile

from comms.gen import comms_pb2 as pb
from device.audio_sink import RecordingSink
from device.playback import JitterPlayer, PacedOutput
from tests.test_playback import packets

FRAME = bytes(1920)


def test_two_devices_recording_into_one_directory_never_overwrite(tmp_path: Path) -> None:
    one, two = RecordingSink(tmp_path, "acme-dev-1"), RecordingSink(tmp_path, "acme-dev-2")
    for sink in (one, two):
        sink.start_sound()
        sink.write(FRAME, is_end=True)
        sink.end_sound()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2
    assert names[0].startswith("acme-dev-1-") and names[1].startswith("acme-dev-2-")
    assert all(name.endswith("-001.wav") for name in names)


def recording(tmp_path: Path, open_packets: int) -> tuple[RecordingSink, JitterPlayer, PacedOutput]:
    """A sound of ``open_packets`` (no end yet) queued in a player whose output records to ``tmp_path``."""
    sink = RecordingSink(tmp_path, "acme-dev-1")
    player = JitterPlayer(jitter_frames=1)
    for packet in packets(open_packets, end=False):
        player.on_packet(packet)
    return sink, player, PacedOutput(player, sink)


def test_a_cut_off_sound_is_saved_as_partial(tmp_path: Path) -> None:
    """Power off mid-sound: the player tells the output, which saves what was heard, flagged."""
    sink, player, output = recording(tmp_path, 20)
    for _ in range(5):
        output.step()
    player.silence_now()  # power off
    output.step()
    (path,) = tmp_path.iterdir()
    assert path.name.endswith("-001-partial.wav")
    audio, rate = soundfile.read(path, dtype="int16")
    assert rate == 48_000 and len(audio) == 5 * 960
    assert not sink.sounds[0].ended


def test_a_new_sound_cuts_the_old_one(tmp_path: Path) -> None:
    _, player, output = recording(tmp_path, 10)
    output.step()
    player.on_packet(pb.AudioPacket(is_start=True, is_end=True, data=packets(1)[0].data))
    for _ in range(3):
        output.step()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0].endswith("-001-partial.wav") and names[1].endswith("-002.wav")
