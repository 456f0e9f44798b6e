#!/usr/bin/env python3
"""``make demo``: the product end to end on this machine.

Provisions a development PKI if absent (with an issuing CA for enrolment), starts
the real server (mTLS) on 127.0.0.1, connects a headless device with its
certificate and walks it through Mode, Play, Stop (mid long sound), Play, Mode,
Play (preempt). Then the operator side: ``audio-admin`` (the dev operator's
certificate) lists the device, plays on it, and shows the audit line. Last, a new
device is enrolled with a one-time code instead of a copied key: the dev
operator makes the code, ``audio-device enroll`` (a subprocess, in a directory of
its own) makes the key, gets its certificate from the server's enrolment port,
connects with it and plays. Prints what the devices saw and heard; exits 0 only
if every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from auth.tls import load_tls_material  # noqa: E402
from comms.audio_format import FRAME_SECONDS  # noqa: E402
from device.audio_sink import RecordingSink  # noqa: E402
from device.client import DeviceClient  # noqa: E402
from server.devices.leds import LED1_IDLE, LED1_PLAYING, MODE_LEDS, MODE_PALETTE  # noqa: E402

MODE, STOP, PLAY = 1, 2, 3
SHAPES = ("square", "rhomboid", "triangle", "circle")
COLOURS = ("white", "amber", "magenta", "cyan")
START_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 10.0
DEV_OPERATOR = "dev-admin"
ENROLLED = "kitchen-1"  # the device the demo enrols with a code (not in the dev PKI)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def describe(leds: list[int]) -> str:
    state = {LED1_IDLE: "idle", LED1_PLAYING: "playing", 0: "off"}.get(leds[1], f"led_1={leds[1]:08x}")
    lit = [(i, c) for i, c in enumerate(leds[2:6]) if c]
    if len(lit) == 1 and lit[0][1] in MODE_PALETTE:
        index, colour = lit[0]
        mode = MODE_PALETTE.index(colour) * MODE_LEDS + index
        shown = f"mode {mode} ({SHAPES[index]} {COLOURS[MODE_PALETTE.index(colour)]})"
    else:
        shown = "mode LEDs " + " ".join(f"{c:08x}" for c in leds[2:6])
    return f"{state:<8} {shown}"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


async def until(predicate: object, timeout: float = STEP_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def scenario(target: str, pki_dir: Path, out_dir: Path) -> list[Check]:
    tls = load_tls_material(
        pki_dir / "devices/acme/dev-1.crt", pki_dir / "devices/acme/dev-1.key", pki_dir / "ca.crt"
    )
    sink = RecordingSink(out_dir / "wav", "acme-dev-1")
    checks: list[Check] = []
    t0 = time.monotonic()
    seen: list[tuple[float, str]] = []

    def on_leds(leds: list[int]) -> None:
        text = describe(leds)
        if not seen or seen[-1][1] != text:
            seen.append((time.monotonic() - t0, text))

    def sound(n: int) -> bool:
        return len(sink.sounds) >= n

    async with DeviceClient(target, tls, sink, on_leds=on_leds) as device:
        session = device.session
        checks.append(
            Check(
                "session created: EdDSA token bound to the device certificate",
                session is not None and bool(session.token),
                f"session {session.session_id}, token valid {session.expires_at_unix - int(time.time())} s"
                if session
                else "none",
            )
        )
        checks.append(
            Check(
                "connected; first status request shows mode 0, idle",
                await until(lambda: bool(seen)) and "idle" in seen[0][1] and "mode 0" in seen[0][1],
            )
        )
        await device.press(MODE)
        checks.append(Check("Mode -> mode 1", await until(lambda: "mode 1" in seen[-1][1])))
        await device.press(PLAY)
        started = await until(lambda: sound(1) and sink.sounds[0].packets > 0 and "playing" in seen[-1][1])
        checks.append(Check("Play -> the mode 1 long sound starts, led_1 shows playing", started))
        await asyncio.sleep(1.5)
        await device.press(STOP)
        acked = time.monotonic()
        ended = await until(lambda: sink.sounds[0].ended, 2.0)
        gap = (sink.sounds[0].arrivals[-1] - acked) if ended else float("inf")
        checks.append(
            Check(
                "Stop mid long sound -> is_end within 2 frames of the ack",
                ended and gap <= 2 * FRAME_SECONDS,
                f"is_end at {gap * 1000:+.0f} ms relative to the ack",
            )
        )
        checks.append(Check("back to idle", await until(lambda: seen[-1][1].startswith("idle"))))
        await device.press(PLAY)
        await until(lambda: sound(2) and sink.sounds[1].packets > 0)
        await asyncio.sleep(1.0)
        await device.press(MODE)
        checks.append(
            Check(
                "Mode while playing -> shows mode 2, keeps playing",
                await until(lambda: "mode 2" in seen[-1][1] and "playing" in seen[-1][1])
                and not sink.sounds[1].ended,
            )
        )
        await device.press(PLAY)
        preempted = await until(lambda: sound(3) and sink.sounds[1].ended)
        checks.append(
            Check(
                "Play while playing -> mode 1 sound ends, mode 2 sound starts at once",
                preempted and sink.sounds[2].arrivals[0] - sink.sounds[1].arrivals[-1] < 2 * FRAME_SECONDS,
            )
        )
        finished = await until(
            lambda: sink.sounds[2].ended and seen[-1][1].startswith("idle"), STEP_TIMEOUT_S
        )
        checks.append(Check("the mode 2 sound plays to its end, then idle", finished))
        checks.append(Check("all streams still open", not device.ends, str(device.ends)))
    sink.close()

    print("\nLED states seen by the device (led_1 state, mode LEDs led_2..led_5):")
    for at, text in seen:
        print(f"  t={at:6.2f}s  {text}")
    print("\nSounds received and decoded:")
    how = {1: "ended by Stop", 2: "preempted by Play", 3: "played to the end"}
    for s in sink.sounds:
        wav = s.wav_path.relative_to(ROOT) if s.wav_path and s.wav_path.is_relative_to(ROOT) else s.wav_path
        print(
            f"  #{s.index}: {s.duration:5.2f} s, {s.packets:4d} Opus packets, {how.get(s.index, '')} -> {wav}"
        )
    checks.append(Check("three sounds received", len(sink.sounds) == 3, f"got {len(sink.sounds)}"))
    return checks


def admin_cli(admin_target: str, pki_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "admin", "--server", admin_target, "--pki-dir", str(pki_dir),
               "--tenant", "acme", "--operator", DEV_OPERATOR, *args]  # fmt: skip
    print(f"\n$ audio-admin --tenant acme --operator {DEV_OPERATOR} {' '.join(args)}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    print(result.stdout.rstrip() or result.stderr.rstrip())
    return result


async def operator_side(target: str, admin_target: str, pki_dir: Path) -> list[Check]:
    """The dev operator lists the device, plays on it from the CLI, and reads the audit log."""
    tls = load_tls_material(
        pki_dir / "devices/acme/dev-1.crt", pki_dir / "devices/acme/dev-1.key", pki_dir / "ca.crt"
    )
    sink = RecordingSink()
    checks: list[Check] = []
    async with DeviceClient(target, tls, sink) as device:
        await until(lambda: device.status_requests >= 1)
        listing = await asyncio.to_thread(admin_cli, admin_target, pki_dir, "devices", "list")
        row = next((line for line in listing.stdout.splitlines() if line.startswith("dev-1 ")), "")
        checks.append(
            Check("operator lists acme/dev-1 as online", listing.returncode == 0 and "online" in row)
        )
        played = await asyncio.to_thread(admin_cli, admin_target, pki_dir, "devices", "play", "dev-1")
        heard = await until(lambda: bool(sink.sounds) and sink.sounds[0].packets > 0)
        checks.append(Check("audio-admin devices play -> the device plays", played.returncode == 0 and heard))
        audit = await asyncio.to_thread(admin_cli, admin_target, pki_dir, "audit", "list", "--limit", "1")
        line = audit.stdout.splitlines()[-1] if audit.stdout else ""
        checks.append(
            Check("the play is in the audit log", "Play" in line and "OK" in line and DEV_OPERATOR in line)
        )
    return checks


async def announcement(target: str, admin_target: str, pki_dir: Path) -> list[Check]:
    """Two devices labelled zone=hall; one announcement to the label plays on both at one instant."""
    sinks = {name: RecordingSink() for name in ("dev-1", "dev-2")}
    checks: list[Check] = []
    async with contextlib.AsyncExitStack() as stack:
        for name, sink in sinks.items():
            tls = load_tls_material(
                pki_dir / f"devices/acme/{name}.crt", pki_dir / f"devices/acme/{name}.key", pki_dir / "ca.crt"
            )
            device = await stack.enter_async_context(DeviceClient(target, tls, sink))
            await until(lambda d=device: d.status_requests >= 1)  # type: ignore[misc]
        labelled = [
            await asyncio.to_thread(admin_cli, admin_target, pki_dir, "devices", "label", name, "zone=hall")
            for name in sinks
        ]
        played = await asyncio.to_thread(
            admin_cli, admin_target, pki_dir, "--json", "announce", "--selector", "zone=hall", "--mode", "2"
        )
        result = json.loads(played.stdout) if played.returncode == 0 else {}
        heard = await until(lambda: all(s.sounds and s.sounds[0].ended for s in sinks.values()))
        firsts = [s.sounds[0].arrivals[0] for s in sinks.values() if s.sounds]
        spread_ms = 1000 * (max(firsts) - min(firsts)) if len(firsts) == 2 else float("inf")
        checks.append(
            Check(
                "audio-admin announce --selector zone=hall -> both devices play it at one instant",
                all(r.returncode == 0 for r in labelled)
                and sorted(result.get("started", [])) == sorted(sinks)
                and heard,
                f"first packets {spread_ms:.1f} ms apart",
            )
        )
    return checks


def enrol_cli(enroll_target: str, code: str, pin: str, device_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "device", "enroll", "--server", enroll_target, "--code", code,
               "--ca-fingerprint", pin, "--server-name", "localhost",
               "--pki-dir", str(device_dir)]  # fmt: skip
    print(f"\n$ audio-device enroll --server {enroll_target} --code {code} --ca-fingerprint {pin[:19]}... "
          f"--pki-dir {device_dir}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    print(result.stdout.rstrip() or result.stderr.rstrip())
    return result


async def enrolment(target: str, admin_target: str, enroll_target: str, pki_dir: Path) -> list[Check]:
    """A new device with a one-time code: its key is made on the device and never copied."""
    checks: list[Check] = []
    made = await asyncio.to_thread(
        admin_cli,
        admin_target,
        pki_dir,
        "--json",
        "enrollments",
        "create",
        "--device",
        ENROLLED,
        "--ttl",
        "1h",
    )
    answer = json.loads(made.stdout) if made.returncode == 0 else {}
    code = answer.get("enrollments", [{}])[0].get("code", "")
    pin = answer.get("ca_fingerprint", "")
    checks.append(Check(f"operator makes a one-time code for acme/{ENROLLED}", bool(code and pin)))
    with tempfile.TemporaryDirectory(prefix="demo-device-") as tmp:
        device_dir = Path(tmp)
        done = await asyncio.to_thread(enrol_cli, enroll_target, code, pin, device_dir)
        cert, key = device_dir / f"devices/acme/{ENROLLED}.crt", device_dir / f"devices/acme/{ENROLLED}.key"
        made_here = key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
        never_copied = not (pki_dir / f"devices/acme/{ENROLLED}.key").exists()
        checks.append(
            Check(
                f"audio-device enroll: acme/{ENROLLED} enrolled with the code, its key made on the device",
                done.returncode == 0 and made_here and never_copied,
                f"key {key.relative_to(device_dir)} (0600) only in the device's directory",
            )
        )
        again = await asyncio.to_thread(enrol_cli, enroll_target, code, pin, device_dir / "second")
        checks.append(
            Check("the code is single use: enrolling with it again is refused", again.returncode == 78)
        )
        if done.returncode != 0:
            return [*checks, Check(f"acme/{ENROLLED} connects with its issued certificate and plays", False)]
        sink = RecordingSink()
        tls = load_tls_material(cert, key, device_dir / "ca.crt")
        async with DeviceClient(target, tls, sink) as device:
            await until(lambda: device.status_requests >= 1)
            await device.press(PLAY)
            heard = await until(lambda: bool(sink.sounds) and sink.sounds[0].packets > 0)
        checks.append(Check(f"acme/{ENROLLED} connects with its issued certificate and plays", heard))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pki-dir", type=Path, default=ROOT / "certs" / "dev")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output")
    args = parser.parse_args()

    gen_certs = [sys.executable, str(ROOT / "scripts" / "gen_certs.py")]
    if not (args.pki_dir / "ca.crt").exists():
        subprocess.run([*gen_certs, "dev", "--out", str(args.pki_dir)], check=True)
    if not (args.pki_dir / "signing").exists():  # a dev PKI from before session tokens
        subprocess.run([*gen_certs, "signing-key", "--out", str(args.pki_dir)], check=True)
    if not (args.pki_dir / "operators" / "acme" / f"{DEV_OPERATOR}.crt").exists():  # from before operators
        operator = ["operator", "--tenant", "acme", "--name", DEV_OPERATOR, "--role", "admin"]
        subprocess.run([*gen_certs, *operator, "--out", str(args.pki_dir)], check=True)
    if not (args.pki_dir / "issuing" / "issuing-ca.crt").exists():  # enrolment issues from it
        subprocess.run([*gen_certs, "issuing-ca", "--out", str(args.pki_dir)], check=True)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    port, admin_port, enroll_port = free_port(), free_port(), free_port()
    log_path = args.out / "server.log"
    print(f"starting audio-server on 127.0.0.1:{port} (mTLS, PKI {args.pki_dir}); log: {log_path}")
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--pki-dir",
                str(args.pki_dir),
                "--bind",
                f"127.0.0.1:{port}",
                "--state-path",
                str(args.out / "devices.sqlite3"),
                "--log-format",
                "text",
                "--health-bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
                "--admin-bind",
                f"127.0.0.1:{admin_port}",
                "--enroll-bind",
                f"127.0.0.1:{enroll_port}",
            ],
            stderr=log_file,
            stdout=log_file,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "server.listening" not in log_path.read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(), file=sys.stderr)
                    print("demo: the server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print("device acme/dev-1 connecting with its client certificate ...")
            checks = asyncio.run(scenario(f"127.0.0.1:{port}", args.pki_dir, args.out))
            print("\nthe operator side, with the dev operator's certificate:")
            checks += asyncio.run(operator_side(f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}", args.pki_dir))
            print("\nan announcement to two devices by their label:")
            checks += asyncio.run(announcement(f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}", args.pki_dir))
            print(f"\na new device, acme/{ENROLLED}, enrolled with a one-time code (no key copied):")
            checks += asyncio.run(
                enrolment(
                    f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}", f"127.0.0.1:{enroll_port}", args.pki_dir
                )
            )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                code = -9
    checks.append(Check("server drained and exited 0 on SIGTERM", code == 0, f"exit {code}"))

    print("\nChecks:")
    for check in checks:
        print(
            f"  [{'ok' if check.ok else 'FAIL'}] {check.name}"
            + (f" ({check.detail})" if check.detail else "")
        )
    failed = [c for c in checks if not c.ok]
    print(
        f"\ndemo {'PASSED' if not failed else 'FAILED'}: {len(checks) - len(failed)}/{len(checks)} checks; "
        f"WAVs in {args.out / 'wav'}, server log {log_path}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
