"""pi/install.sh into a temporary root: enrolment against a real server, files, owners and modes,
the unit as systemd itself checks it, and an upgrade that keeps the key.

The virtualenv is made for real; its dependencies come from this environment (PYTHONPATH, no
index: tests use no network), the device itself from the wheel pi/client builds. apt-get and
starting the service are skipped under --root (the script says so); users and groups are made in
ROOT/etc with shadow's --prefix when the test runs as root (else --no-system: modes only).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from auth.device_credentials import load_device_credentials
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from server.app import AudioServer
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, wait_for
from tests.test_enrolment import code_for

ROOT_DIR = Path(__file__).resolve().parent.parent
INSTALL = ROOT_DIR / "pi" / "install.sh"
UNIT = ROOT_DIR / "pi" / "audio-device.service"
AS_ROOT = os.geteuid() == 0
PKI_DIR = Path("var/lib/audio-device/pki")
VENV = Path("opt/audio-device/.venv")


def seeded_root(path: Path) -> Path:
    """A root with the account files shadow's tools edit (``audio`` exists, ``gpio`` does not) and
    the system's own units, which ``systemd-analyze verify --root`` resolves the unit against."""
    etc = path / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\naudio:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    if Path("/usr/lib/systemd/system").is_dir():
        (path / "usr/lib/systemd").mkdir(parents=True)
        shutil.copytree("/usr/lib/systemd/system", path / "usr/lib/systemd/system", symlinks=True)
    return path


async def install(root: Path, wheel: Path, *args: str) -> tuple[int, str, str]:
    """Run install.sh without blocking the loop (the server under test answers the enrolment)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": sysconfig.get_paths()["purelib"],  # the dependencies, from this environment
        "PIP_NO_INDEX": "1",
        "PIP_NO_CACHE_DIR": "1",
        "HOME": str(root.parent),
    }
    system = [] if AS_ROOT else ["--no-system"]
    command = [str(INSTALL), "--root", str(root), "--wheel", str(wheel), "--extra", "sim"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--python",
        sys.executable,
        *system,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def account(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no user {name} in {root}/etc/passwd")


def members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return fields[3].split(",")
    raise AssertionError(f"no group {group}")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def env_lines(root: Path) -> dict[str, str]:
    text = (root / "etc/audio-device/device.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
async def enrolling(server_factory: ServerFactory, pki: EphemeralPki) -> AudioServer:
    pki.issuing_ca()
    return await server_factory(enroll_bind="127.0.0.1:0")


async def test_install_enrols_lays_out_the_files_and_an_upgrade_keeps_the_key(
    enrolling: AudioServer,
    pki: EphemeralPki,
    admin: Admin,
    connect: Connect,
    device_wheel: Path,
    tmp_path: Path,
) -> None:
    root = seeded_root(tmp_path / "root")
    code, pin = await code_for(enrolling, admin, "pi-7")
    args = [
        *("--server", f"127.0.0.1:{enrolling.port}", "--enroll-server", f"127.0.0.1:{enrolling.enroll_port}"),
        *("--server-name", "localhost", "--code", code, "--ca-fingerprint", pin),
    ]
    status, out, err = await install(root, device_wheel, *args)
    assert status == 0, out + err
    assert "skipped (--root/--no-system): apt-get install -y python3-venv libopus0 libportaudio2" in out
    assert "enrolled as acme/pi-7" in out

    pki_dir = root / PKI_DIR
    key, cert = pki_dir / "devices/acme/pi-7.key", pki_dir / "devices/acme/pi-7.crt"
    assert mode(key) == 0o600 and mode(cert) == 0o644
    assert mode(pki_dir) == 0o700 and mode(root / "var/lib/audio-device") == 0o750
    env_file = root / "etc/audio-device/device.env"
    assert mode(env_file) == 0o640
    assert env_lines(root) == {
        "AUDIO_DEVICE_PKI_DIR": "/var/lib/audio-device/pki",
        "AUDIO_DEVICE_LOG_FORMAT": "text",
        "AUDIO_DEVICE_SERVER": f"127.0.0.1:{enrolling.port}",
        "AUDIO_DEVICE_SERVER_NAME": "localhost",
        "AUDIO_DEVICE_TENANT": "acme",
        "AUDIO_DEVICE_DEVICE": "pi-7",
    }
    unit = root / "etc/systemd/system/audio-device.service"
    assert unit.read_bytes() == UNIT.read_bytes() and mode(unit) == 0o644
    if AS_ROOT:
        uid, gid = account(root, "audio-device")
        for path in (key, cert, pki_dir, root / "var/lib/audio-device"):
            assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
        assert (env_file.stat().st_uid, env_file.stat().st_gid) == (0, gid)
        assert "audio-device" in members(root, "gpio") and "audio-device" in members(root, "audio")
        wants = root / "etc/systemd/system/multi-user.target.wants/audio-device.service"
        assert wants.is_symlink()

    # The certificate is the code's, for the key made in the root; it connects.
    credentials = load_device_credentials(cert, key, pki_dir / "ca.crt", DEFAULT_TRUST_DOMAIN)
    assert credentials.identity == Identity("acme", "pi-7")
    async with connect(enrolling, "acme", "pi-7", tls=credentials.tls) as device:
        await device.press(MODE)
        await wait_for(lambda: mode_of(device.view.leds) == 1)

    # The client runs from the virtualenv in the root, not from this checkout.
    python = root / VENV / "bin/python"
    where = subprocess.run(
        [python, "-c", "import device; print(device.__file__)"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"]},
        check=True,
    )
    assert where.stdout.startswith(str(root / VENV))
    shown = subprocess.run(
        [root / VENV / "bin/audio-device", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"]},
    )
    assert shown.returncode == 0 and "--pki-dir" in shown.stdout

    # An upgrade: the same command again (its code is used up) keeps the key, the operator's own
    # lines and the enrolment, and puts this version's code back in place.
    key_before = key.read_bytes()
    with env_file.open("a") as f:
        f.write("AUDIO_DEVICE_JITTER_MS=80\n")
    installed = next((root / VENV / "lib").glob("python3*/site-packages")) / "device/exits.py"
    installed.write_text("# changed by hand\n")
    status, out, err = await install(root, device_wheel, *args)
    assert status == 0, out + err
    assert "already enrolled" in out and "keeping its key" in out
    assert key.read_bytes() == key_before and mode(key) == 0o600
    assert env_lines(root)["AUDIO_DEVICE_JITTER_MS"] == "80"
    assert env_lines(root)["AUDIO_DEVICE_DEVICE"] == "pi-7"
    assert installed.read_bytes() == zipfile.ZipFile(device_wheel).read("device/exits.py")
    if AS_ROOT:
        assert key.stat().st_uid == account(root, "audio-device")[0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
async def test_the_installed_unit_passes_systemd_analyze_verify(
    device_wheel: Path,
    tmp_path: Path,
) -> None:
    """Against the root: its ExecStart must exist there and be executable, every key be known."""
    root = seeded_root(tmp_path / "root")
    status, out, err = await install(root, device_wheel, "--server", "audio.example.com:50051")
    assert status == 0, out + err
    assert "not enrolled" not in err
    verify = ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/audio-device.service"]
    checked = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    (root / VENV / "bin/audio-device").unlink()  # the check can fail: without the program it does
    assert subprocess.run(verify, capture_output=True, text=True, timeout=60).returncode != 0


async def test_bad_arguments_change_nothing(device_wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    status, _, err = await install(root, device_wheel, "--server", "h:1", "--code", "ABCD-EFGH-JKLM-NPQR")
    assert status == 1 and "--ca-fingerprint" in err
    status, _, err = await install(root, device_wheel, "--server", "no-port")
    assert status == 1 and "HOST:PORT" in err
    assert not root.exists() or not any(root.iterdir())


async def test_an_install_of_the_whole_service_is_replaced_by_the_lean_client(
    device_wheel: Path, tmp_path: Path
) -> None:
    """The old manual steps installed pi-audio-service (numpy, redis, ...) into the same virtualenv."""
    root = seeded_root(tmp_path / "root")
    site = root / VENV / "lib/python3.11/site-packages"
    (site / "pi_audio_service-0.1.0.dist-info").mkdir(parents=True)
    (site / "numpy").mkdir()
    status, out, err = await install(root, device_wheel, "--server", "audio.example.com:50051")
    assert status == 0, out + err
    assert "holds the whole service" in out
    site = next((root / VENV / "lib").glob("python3*/site-packages"))
    assert not (site / "numpy").exists() and not list(site.glob("pi_audio_service-*"))
    assert list(site.glob("pi_audio_device-*.dist-info")) and (root / VENV / "bin/audio-device").exists()
