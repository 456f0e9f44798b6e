"""Content library: built-in sounds, content files of any format, fallbacks, the encode cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import opuslib
import pytest
import soundfile

from comms.audio_format import SAMPLE_RATE, SAMPLES_PER_FRAME
from server.audio import opus as opus_codec
from server.audio.library import AudioLibrary, load_library, read_audio_file
from tests.helpers import best_correlation, heard_clip


def decode_all(packets: tuple[bytes, ...] | list[bytes]) -> np.ndarray:
    decoder = opuslib.Decoder(SAMPLE_RATE, 1)
    return np.frombuffer(b"".join(decoder.decode(p, SAMPLES_PER_FRAME) for p in packets), dtype=np.int16)


def test_builtin_sounds_are_distinct_and_one_is_long(library: AudioLibrary) -> None:
    assert len(library.clips) == 5
    assert max(c.duration for c in library.clips) >= 60
    assert library.clip_for(1).duration >= 60
    short = [c.pcm[: SAMPLE_RATE // 2].astype(float) for c in library.clips]
    for i in range(5):
        for j in range(i + 1, 5):
            assert best_correlation(short[i].astype(np.int16), short[j].astype(np.int16), max_lag=8) < 0.5


def test_every_packet_is_one_valid_nonempty_opus_frame(library: AudioLibrary) -> None:
    for clip in library.clips:
        decoder = opuslib.Decoder(SAMPLE_RATE, 1)
        for packet in clip.packets:
            assert 0 < len(packet) <= 1275
            assert len(decoder.decode(packet, SAMPLES_PER_FRAME)) == SAMPLES_PER_FRAME * 2
        assert len(clip.fade_out_packet(3)) > 0


def test_decoded_audio_matches_the_source(library: AudioLibrary) -> None:
    clip = library.clip_for(2)
    assert best_correlation(decode_all(clip.packets), clip.pcm) > 0.95


def write_tone(path: Path, rate: int, channels: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.4 * np.sin(2 * np.pi * freq * t)
    soundfile.write(str(path), np.repeat(mono[:, None], channels, axis=1), rate)
    return mono


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("mode-0.wav", 44_100, 2), ("mode-0.flac", 16_000, 1), ("mode-0.ogg", 48_000, 2)],
)
def test_content_file_any_rate_and_channels(tmp_path: Path, name: str, rate: int, channels: int) -> None:
    write_tone(tmp_path / name, rate, channels, seconds=0.5, freq=523.25)
    lib = load_library(5, content_dir=tmp_path)
    clip = lib.clip_for(0)
    assert clip.source.endswith(name)
    assert clip.duration == pytest.approx(0.5, abs=0.03)
    t = np.arange(len(clip.pcm)) / SAMPLE_RATE
    reference = (0.4 * np.sin(2 * np.pi * 523.25 * t) * 32767).astype(np.int16)
    assert best_correlation(decode_all(clip.packets), reference) > 0.9


def test_ogg_opus_content_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "mode-3.opus"
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 330 * t), SAMPLE_RATE, format="OGG", subtype="OPUS")
    clip = load_library(5, content_dir=tmp_path).clip_for(3)
    assert clip.source == str(path)
    assert clip.duration == pytest.approx(1.0, abs=0.05)


def test_bad_content_falls_back_and_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "mode-0.wav").write_bytes(b"RIFF not really a wav")
    soundfile.write(str(tmp_path / "mode-1.wav"), np.zeros((0, 1)), SAMPLE_RATE)  # empty
    (tmp_path / "mode-2.wav").write_bytes(b"")
    write_tone(tmp_path / "mode-3.wav", 48_000, 1)
    write_tone(tmp_path / "mode-3.flac", 48_000, 1)  # ambiguous
    write_tone(tmp_path / "mode-4.wav", 48_000, 1)  # good
    write_tone(tmp_path / "mode-9.wav", 48_000, 1)  # beyond mode_count
    with caplog.at_level(logging.WARNING):
        lib = load_library(5, content_dir=tmp_path)
    assert [c.source for c in lib.clips[:4]] == ["builtin"] * 4
    assert lib.clip_for(4).source.endswith("mode-4.wav")
    events = [(r.getMessage(), getattr(r, "mode", None)) for r in caplog.records]
    assert ("audio.content_rejected", 0) in events
    assert ("audio.content_rejected", 1) in events
    assert ("audio.content_rejected", 2) in events
    assert ("audio.content_ambiguous", 3) in events
    assert any(m == "audio.content_mode_unused" for m, _ in events)
    reasons = " ".join(str(getattr(r, "reason", "")) for r in caplog.records)
    assert "no audio samples" in reasons


def test_missing_content_dir_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lib = load_library(5, content_dir=tmp_path / "nope")
    assert all(c.source == "builtin" for c in lib.clips)
    assert any(r.getMessage() == "audio.content_dir_missing" for r in caplog.records)


def test_read_audio_file_missing(tmp_path: Path) -> None:
    from server.audio.library import ContentError

    with pytest.raises(ContentError, match="not found"):
        read_audio_file(tmp_path / "x.wav")


def test_encoding_is_cached_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tone(tmp_path / "content-mode.wav", 48_000, 1)
    (tmp_path / "content").mkdir()
    (tmp_path / "content-mode.wav").rename(tmp_path / "content" / "mode-0.wav")
    cache = tmp_path / "cache"
    calls = []
    real_encode = opus_codec.encode
    monkeypatch.setattr(
        opus_codec, "encode", lambda pcm, bitrate, spf: calls.append(spf) or real_encode(pcm, bitrate, spf)
    )
    first = load_library(5, content_dir=tmp_path / "content", cache_dir=cache)
    assert sorted(calls) == [960] * 5 + [2880] * 5  # every clip at 20 ms and at 60 ms
    second = load_library(5, content_dir=tmp_path / "content", cache_dir=cache)
    assert len(calls) == 10  # nothing re-encoded
    assert first.clip_for(0).packets == second.clip_for(0).packets
    write_tone(tmp_path / "content" / "mode-0.wav", 48_000, 1, freq=600)  # content changed
    load_library(5, content_dir=tmp_path / "content", cache_dir=cache)
    assert len(calls) == 12  # only the changed clip, at both durations


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    pcm = opus_codec.to_int16(np.zeros(SAMPLES_PER_FRAME * 3))
    packets, cached = opus_codec.encode_cached(pcm, 64_000, tmp_path)
    assert not cached
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[:-2])
    again, cached = opus_codec.encode_cached(pcm, 64_000, tmp_path)
    assert not cached and again == packets
    _, cached = opus_codec.encode_cached(pcm, 64_000, tmp_path)
    assert cached


def test_every_unused_file_is_reported_with_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tone(tmp_path / "mode1.wav", 48_000, 1)
    write_tone(tmp_path / "Mode-2.WAV", 48_000, 1)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "old").mkdir()
    (tmp_path / "mode-3.flac").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        lib = load_library(5, content_dir=tmp_path)
    assert all(c.source == "builtin" for c in lib.clips)
    ignored = {
        Path(str(getattr(r, "path", ""))).name: str(getattr(r, "reason", ""))
        for r in caplog.records
        if r.getMessage() == "audio.content_ignored"
    }
    assert ignored["mode1.wav"] == "not named mode-<N>.<ext>: rename it to mode-1.wav"
    assert ignored["Mode-2.WAV"] == "not named mode-<N>.<ext>: rename it to mode-2.wav"
    assert ignored["notes.txt"].startswith("not named mode-<N>.<ext>")
    assert "directory" in ignored["old"]
    reasons = [
        str(getattr(r, "reason", "")) for r in caplog.records if r.getMessage() == "audio.content_rejected"
    ]
    assert any("the file is empty (0 bytes)" in reason for reason in reasons)  # not "Format not recognised"


def test_heard_clip_allows_live_edge_skips_but_not_another_sound(library: AudioLibrary) -> None:
    """The content check the end-to-end tests use: decoded packets with a stretch skipped (as the
    live edge does on a loaded machine) are still the clip; another clip or silence are not."""
    frames = decode_all(library.clip_for(1).packets[:50])
    skipped = np.concatenate([frames[: 12 * SAMPLES_PER_FRAME], frames[25 * SAMPLES_PER_FRAME :]])
    reference = library.clip_for(1).pcm[: 50 * SAMPLES_PER_FRAME]
    assert heard_clip(frames, reference) and heard_clip(skipped, reference)
    assert not heard_clip(decode_all(library.clip_for(2).packets[:50]), reference)
    assert not heard_clip(np.zeros_like(frames), reference)
    assert not heard_clip(skipped[::-1], reference)  # out of order
