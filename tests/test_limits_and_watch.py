from __future__ import annotations

import os
from pathlib import Path

import pytest

from auth.identity import Identity
from server.limits import CallLimiter, TokenBucket
from server.runtime.watch import FileWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now = 100  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_token_bucket_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_call_limiter_is_per_identity() -> None:
    limiter = CallLimiter(2)
    a, b = Identity("acme", "d1"), Identity("globex", "d1")
    assert limiter.acquire(a) and limiter.acquire(a) and not limiter.acquire(a)
    assert limiter.acquire(b)
    limiter.release(a)
    assert limiter.acquire(a)
    for _ in range(3):
        limiter.release(a)
    assert limiter.active(a) == 0


def test_file_watcher_reloads_on_change_and_keeps_old_on_error(tmp_path: Path) -> None:
    target = tmp_path / "crl.pem"
    calls: list[str] = []
    fail = {"now": False}

    def reload() -> None:
        if fail["now"]:
            raise ValueError("broken")
        calls.append(target.read_text() if target.exists() else "<missing>")

    watcher = FileWatcher("crl", [target], reload, interval_s=1)
    assert not watcher.check()  # nothing changed yet
    target.write_text("v1")
    assert watcher.check() and calls == ["v1"]
    assert not watcher.check()
    fail["now"] = True
    target.write_text("v2-longer")
    assert not watcher.check()  # failed reload: reported, not raised
    fail["now"] = False
    os.utime(target, ns=(1, 1))
    assert watcher.check() and calls[-1] == "v2-longer"


def test_file_watcher_sees_directory_entries(tmp_path: Path) -> None:
    calls: list[int] = []
    watcher = FileWatcher("keys", [tmp_path], lambda: calls.append(1), interval_s=1)
    (tmp_path / "k1.key").write_text("x")
    assert watcher.check()
    (tmp_path / "k1.key").unlink()
    assert watcher.check() and len(calls) == 2
