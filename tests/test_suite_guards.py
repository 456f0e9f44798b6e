"""Guards on the test suite itself: what must run is never skipped silently."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import REQUIRED_BY, RedisServer

ROOT = Path(__file__).resolve().parent.parent
A_REDIS_TEST = "tests/test_shared_state.py::test_mode_follows_the_device_to_another_replica"
RUN_TIMEOUT_S = 120


def run_without_redis(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """One Redis test in a pytest of its own, with a PATH on which no redis-server can be found."""
    bare = tmp_path / "bin"
    bare.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED_BY and not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", A_REDIS_TEST],
        cwd=ROOT, env={**clean, "PATH": str(bare), **env}, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


@pytest.mark.parametrize("variable", REQUIRED_BY)
def test_a_missing_redis_fails_the_run_when_required(tmp_path: Path, variable: str) -> None:
    result = run_without_redis(tmp_path, **{variable: "1"})
    assert result.returncode == 1, result.stdout
    assert "redis-server is not installed" in result.stdout
    assert re.search(r"\b1 error\b", result.stdout), result.stdout


def test_a_missing_redis_skips_only_when_nothing_requires_it(tmp_path: Path) -> None:
    result = run_without_redis(tmp_path)
    assert result.returncode == 0, result.stdout
    assert re.search(r"\b1 skipped\b", result.stdout), result.stdout


def test_the_guard_reads_the_environment_as_set_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in REQUIRED_BY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WITH_REDIS", "0")  # explicitly off: still a skip
    with pytest.raises(pytest.skip.Exception):
        RedisServer(tmp_path / "redis").start()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        RedisServer(tmp_path / "redis").start()


def test_make_test_requires_redis_for_pytest_too() -> None:
    """Installing redis-server is not enough: the pytest run itself must refuse to skip without it."""
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    pytest_lines = [line for line in recipe.splitlines() if "-m pytest" in line]
    assert pytest_lines and all("WITH_REDIS=1" in line for line in pytest_lines), recipe
