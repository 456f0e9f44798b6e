"""Push-to-talk latency: a click in the browser's microphone -> its arrival at a device.

A real server (in this process, console on), a real device client decoding real Opus and Debian's
chromium (Playwright) whose fake microphone plays a WAV made here: silence with a click every
``CLICK_EVERY_S``. The operator holds Talk on the device page for ``TALK_S``.

The mouth instant of each click is taken in the page, as its frame leaves for the WebSocket (a
script wrapped around ``WebSocket.send`` finds the click in the 20 ms frame and dates it back to the
click's own sample: the frame's fill time counts). Chromium's own capture buffer before the
AudioWorklet (a few ms for the fake device) is the one part not counted. The arrival instant is the
device's receipt of the packet holding the decoded click. Both are the machine's wall clock; each
arrival is paired with the latest click said before it. Prints median / p99 (targets: median
<= 150 ms, p99 <= 300 ms on loopback), never asserted; skipped without chromium.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from admin.client import FleetClient
from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from bench.bench_admin import percentile, server_pki, until
from bench.bench_console import console_settings
from comms.gen import admin_pb2 as apb
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.app import start_server

RATE = 48_000
FRAME = 960
CLICK_EVERY_S = 0.5
CLICK_SAMPLES = 48  # 1 ms burst
TALK_S = 20.0
THRESHOLD = 12_000  # a click's samples; the silence between is digital zero
DEVICE_THRESHOLD = 4_000  # the decoded click (Opus smears it, lower)
PAGE_PROBE = """
(() => {
  const send = WebSocket.prototype.send;
  window.__clicks = [];
  WebSocket.prototype.send = function (data) {
    if (data instanceof ArrayBuffer && data.byteLength === 1920) {
      const s = new Int16Array(data);
      for (let i = 0; i < s.length; i++) {
        if (Math.abs(s[i]) > THRESHOLD) { window.__clicks.push(Date.now() - (960 - i) / 48); break; }
      }
    }
    return send.call(this, data);
  };
})();
""".replace("THRESHOLD", str(THRESHOLD))


def click_file(path: Path) -> None:
    period = int(CLICK_EVERY_S * RATE)
    pcm = np.zeros(period * 4, dtype=np.int16)
    for start in range(period // 2, len(pcm), period):
        burst = np.sin(2 * np.pi * 2000 * np.arange(CLICK_SAMPLES) / RATE)
        pcm[start : start + CLICK_SAMPLES] = (0.9 * 32767 * burst).astype(np.int16)
    soundfile.write(str(path), pcm, RATE, subtype="PCM_16")


def device_clicks(sink: RecordingSink, wall_offset: float) -> list[float]:
    """Wall-clock arrivals of the packets where a decoded click begins."""
    found: list[float] = []
    for sound in sink.sounds:
        pcm = np.frombuffer(b"".join(sound.chunks), dtype=np.int16)
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > DEVICE_THRESHOLD)
        last = -(10**9)
        for index in loud:
            if index - last > RATE * CLICK_EVERY_S / 2:  # a new click, not the same one's tail
                packet = min(int(index) // FRAME, len(sound.arrivals) - 1)
                found.append(sound.arrivals[packet] + wall_offset)
            last = int(index)
    return found


def pair(said: list[float], heard: list[float]) -> list[float]:
    """Each arrival minus the latest click said before it (ms); arrivals with none are dropped."""
    latencies = []
    for arrival in heard:
        before = [s for s in said if s <= arrival]
        if before and arrival - before[-1] < CLICK_EVERY_S:
            latencies.append((arrival - before[-1]) * 1000)
    return latencies


async def measure(root: Path, chromium: str) -> list[float]:
    from playwright.async_api import async_playwright

    ca = server_pki(root)
    device = pki.issue_device_cert(ca, Identity("acme", "dev-1"), DEFAULT_TRUST_DOMAIN)
    operator = pki.issue_operator_cert(ca, OperatorIdentity("bench", Role.OPERATOR, "acme"))
    wav = root / "clicks.wav"
    click_file(wav)
    settings = console_settings(root)
    app = await start_server(settings)
    sink = RecordingSink()
    try:
        device_tls = TlsMaterial(device.cert_pem(), device.key_pem(), ca.cert_pem())
        async with DeviceClient(f"127.0.0.1:{app.port}", device_tls, sink) as client:
            await until(lambda: client.status_requests >= 1)
            operator_tls = TlsMaterial(operator.cert_pem(), operator.key_pem(), ca.cert_pem())
            async with FleetClient(f"127.0.0.1:{app.admin_port}", operator_tls) as fleet:
                link = (await fleet.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())).url
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=chromium,
                    args=[
                        "--no-sandbox",
                        "--use-fake-ui-for-media-stream",
                        "--use-fake-device-for-media-stream",
                        f"--use-file-for-fake-audio-capture={wav}",
                        "--autoplay-policy=no-user-gesture-required",
                    ],
                )
                context = await browser.new_context(ignore_https_errors=True, permissions=["microphone"])
                await context.add_init_script(PAGE_PROBE)
                page = await context.new_page()
                await page.goto(link)
                await page.goto(link.split("/login/")[0] + "/devices/acme/dev-1")
                await page.locator("[data-talk]").hover()
                await page.mouse.down()
                await asyncio.sleep(TALK_S)
                said = [value / 1000 for value in await page.evaluate("window.__clicks")]
                await page.mouse.up()
                await until(lambda: bool(sink.sounds) and sink.sounds[-1].ended, timeout=5)
                await browser.close()
    finally:
        await app.stop(grace_s=0.5)
    return pair(said, device_clicks(sink, time.time() - time.monotonic()))


def run() -> None:
    print("\nPush-to-talk: a click in the browser's microphone -> its arrival at a device (loopback):")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("  skipped: chromium is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ms = asyncio.run(measure(Path(tmp), chromium))
    if not ms:
        print("  not measured: no click reached the device")
        return
    print(
        f"  mouth -> device: median {statistics.median(ms):5.1f} ms, p99 {percentile(ms, 0.99):5.1f} ms, "
        f"max {max(ms):5.1f} ms ({len(ms)} clicks; targets: median <= 150 ms, p99 <= 300 ms)"
    )


if __name__ == "__main__":
    run()
