"""The one atomic file write (comms.files): the asked mode, all or nothing, durable."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from comms.files import write_atomic
from server.audio import opus as opus_codec


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("wanted", [0o600, 0o640, 0o644])
def test_the_file_has_the_asked_mode_whatever_the_umask(tmp_path: Path, wanted: int) -> None:
    old_umask = os.umask(0o077)  # a umask that would strip group/other bits from a plain open()
    try:
        write_atomic(tmp_path / "a" / "b.pem", b"data", wanted)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a" / "b.pem").read_bytes() == b"data"
    assert mode(tmp_path / "a" / "b.pem") == wanted


def test_a_replaced_file_takes_the_new_mode(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"new" and mode(target) == 0o600


def test_nothing_is_visible_before_the_bytes_are_on_disk_and_the_mode_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the file's fsync the target still holds the old bytes and the temporary file already has
    the final mode; afterwards the directory is fsynced too (the rename survives a power cut)."""
    target = tmp_path / "crl.pem"
    target.write_bytes(b"old")
    seen: list[tuple[str, int, bytes]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        info = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        seen.append((kind, stat.S_IMODE(info.st_mode), target.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_atomic(target, b"new", 0o644)
    assert [(kind, content) for kind, _, content in seen] == [("file", b"old"), ("dir", b"new")]
    assert seen[0][1] == 0o644


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failing_write_leaves_the_old_file_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "server.key"
    target.write_bytes(b"old key")
    target.chmod(0o600)

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new key", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key"]
    assert target.read_bytes() == b"old key" and mode(target) == 0o600


def test_a_directory_that_cannot_be_fsynced_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def no_dir_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_dir_fsync)
    write_atomic(tmp_path / "x", b"x", 0o600)
    assert (tmp_path / "x").read_bytes() == b"x"


def test_the_opus_cache_is_written_by_it_private_to_the_server(tmp_path: Path) -> None:
    pcm = np.zeros(4800, dtype=np.int16)  # 0.1 s of silence
    _, cached = opus_codec.encode_cached(pcm, 64_000, tmp_path)
    assert not cached
    (cache_file,) = tmp_path.iterdir()
    assert mode(cache_file) == opus_codec.CACHE_MODE == 0o600
