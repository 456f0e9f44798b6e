"""``audio-device``: clear start-up errors, and the simulator's terminal view."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import EphemeralPki


def run_device(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_missing_certificate_is_one_clear_line(tmp_path: Path) -> None:
    result = run_device("--pki-dir", str(tmp_path), "--tenant", "acme", "--device", "nope")
    assert result.returncode == 1
    assert "device certificate not found" in result.stderr and "Traceback" not in result.stderr


def test_bad_setting_is_one_clear_line() -> None:
    result = run_device("--jitter-ms", "5")
    assert result.returncode == 1 and "jitter_ms" in result.stderr


def test_simulator_runs_against_a_server_and_quits(pki: EphemeralPki, tmp_path: Path) -> None:
    """Starts, checks its certificate, draws the LEDs, quits on q; no server needed for that."""
    from auth import pki as pki_lib

    cert, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    pki_lib.write_certified_key(pki.device("acme", "sim-1"), cert, key)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "device",
            "--simulate",
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--ca",
            str(pki.root / "ca.crt"),
            "--server",
            "127.0.0.1:9",
            "--record-dir",
            str(tmp_path / "wav"),
        ],
        input="q\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "keys: c Connect" in result.stdout and "power" in result.stdout


def test_without_gpio_it_says_to_simulate(pki: EphemeralPki, tmp_path: Path) -> None:
    from auth import pki as pki_lib

    cert, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    pki_lib.write_certified_key(pki.device("acme", "sim-2"), cert, key)
    result = run_device(
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--ca",
        str(pki.root / "ca.crt"),
        "--server",
        "127.0.0.1:9",
        "--record-dir",
        str(tmp_path / "wav"),
    )
    assert result.returncode == 1
    assert "use --simulate" in result.stderr and "Traceback" not in result.stderr
