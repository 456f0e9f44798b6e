"""``audio-device``: clear start-up errors, and the simulator's terminal view."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auth import pki as pki_lib
from device.simview import visible_length
from tests.helpers import EphemeralPki


def run_device(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def device_args(pki: EphemeralPki, tmp_path: Path) -> list[str]:
    """Flags for a provisioned device whose server is not there (port 9)."""
    cert, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    pki_lib.write_certified_key(pki.device("acme", "sim-1"), cert, key)
    return [
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
    ]


def test_missing_certificate_is_one_clear_line(tmp_path: Path) -> None:
    result = run_device("--pki-dir", str(tmp_path), "--tenant", "acme", "--device", "nope")
    assert result.returncode == 78  # EX_CONFIG: permanent, systemd does not restart it
    assert "device certificate not found" in result.stderr and "Traceback" not in result.stderr


def test_bad_setting_is_one_clear_line() -> None:
    result = run_device("--jitter-ms", "5")
    assert result.returncode == 78  # EX_CONFIG: permanent, systemd does not restart it
    assert (
        result.stderr.strip()
        == "audio-device: bad setting --jitter-ms: Input should be greater than or equal to 20"
    )


def test_simulator_starts_draws_the_leds_and_quits(device_args: list[str]) -> None:
    result = run_device("--simulate", *device_args, stdin="q\n")
    assert result.returncode == 0, result.stderr
    assert "keys: c Connect" in result.stdout and "pwr" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "pwr" in line]
    assert lines and all(visible_length(line) <= 80 for line in lines)


def test_without_gpio_it_says_to_simulate(device_args: list[str]) -> None:
    result = run_device(*device_args)
    assert result.returncode == 78  # EX_CONFIG: permanent, systemd does not restart it
    assert "use --simulate" in result.stderr and "Traceback" not in result.stderr


def test_without_gpio_our_line_comes_alone(device_args: list[str]) -> None:
    """Off a Pi without --simulate: one clear line, not gpiozero's fallback warnings first."""
    result = run_device(*device_args)
    assert result.returncode == 78  # EX_CONFIG: permanent, systemd does not restart it
    assert "no GPIO on this machine" in result.stderr and "use --simulate" in result.stderr
    assert "Warning" not in result.stderr and "PinFactoryFallback" not in result.stderr
