"""The Pi's systemd unit: hardened (systemd-analyze security), and permanent failures not restarted."""

from __future__ import annotations

import configparser
import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from auth import pki as pki_lib
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from tests.helpers import EphemeralPki
from tests.test_device_cli import run_device

UNIT = Path(__file__).resolve().parent.parent / "pi" / "audio-device.service"
MAX_EXPOSURE = 3.0


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_scores_3_or_lower() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match[1])
    print(f"\nsystemd-analyze security: {score}")
    assert score <= MAX_EXPOSURE


def test_gpio_and_sound_stay_reachable() -> None:
    service = unit()["Service"]
    assert "gpio" in service["SupplementaryGroups"] and "audio" in service["SupplementaryGroups"]
    allowed = UNIT.read_text()
    for device in ("/dev/gpiochip0", "/dev/gpiomem", "char-alsa"):
        assert f"DeviceAllow={device} rw" in allowed
    assert "AF_INET" in service["RestrictAddressFamilies"]


def test_permanent_failures_exit_78_which_the_unit_does_not_restart(
    pki: EphemeralPki, tmp_path: Path
) -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure" and "78" in service["RestartPreventExitStatus"].split()
    now = dt.datetime.now(dt.UTC)
    expired = pki_lib.issue_certificate(
        pki.ca,
        "acme/old",
        [pki_lib.x509.UniformResourceIdentifier(Identity("acme", "old").spiffe_id(DEFAULT_TRUST_DOMAIN))],
        server=False,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    cert, key = tmp_path / "old.crt", tmp_path / "old.key"
    pki_lib.write_certified_key(expired, cert, key)
    result = run_device("--cert", str(cert), "--key", str(key), "--ca", str(pki.root / "ca.crt"))
    assert result.returncode == 78
    assert "expired" in result.stderr
