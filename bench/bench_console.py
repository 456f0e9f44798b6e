"""The console's liveness: a device's button press -> the change drawn on an open fleet page.

A real server (in this process, console on), a real device client and Debian's
chromium (Playwright) with the fleet page open; the device presses Mode
``PRESSES`` times; each time we wait (polling every animation frame) until the
page shows the new mode's LED. Prints median / p99; skipped without chromium.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from admin.client import FleetClient
from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from bench.bench_admin import server_pki, until
from comms.gen import admin_pb2 as apb
from device.audio_sink import NullSink
from device.client import DeviceClient
from server.app import start_server
from server.runtime.settings import ServerSettings

PRESSES = 40
MODES = 5
MODE_BUTTON = 1
LED_CLASSES = ("white", "amber", "magenta", "cyan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def console_settings(root: Path) -> ServerSettings:
    """One server with its console on free ports, memory state, quiet logs (for browser benches)."""
    return ServerSettings(
        pki_dir=root,
        bind="127.0.0.1:0",
        admin_bind="127.0.0.1:0",
        console_bind="127.0.0.1:0",
        health_bind="",
        metrics_bind="",
        state_backend="memory",
        cache_dir=None,
        log_level="ERROR",
    )


async def measure(root: Path, chromium: str) -> list[float]:
    from playwright.async_api import async_playwright

    ca = server_pki(root)
    device = pki.issue_device_cert(ca, Identity("acme", "dev-1"), DEFAULT_TRUST_DOMAIN)
    operator = pki.issue_operator_cert(ca, OperatorIdentity("bench", Role.VIEWER, "acme"))
    settings = console_settings(root)
    app = await start_server(settings)
    took: list[float] = []
    try:
        device_tls = TlsMaterial(device.cert_pem(), device.key_pem(), ca.cert_pem())
        async with DeviceClient(f"127.0.0.1:{app.port}", device_tls, NullSink()) as client:
            await until(lambda: client.status_requests >= 1)
            operator_tls = TlsMaterial(operator.cert_pem(), operator.key_pem(), ca.cert_pem())
            async with FleetClient(f"127.0.0.1:{app.admin_port}", operator_tls) as fleet:
                link = (await fleet.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())).url
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = await (await browser.new_context(ignore_https_errors=True)).new_page()
                await page.goto(link)
                await page.wait_for_function("document.body.dataset.live === 'connected'")
                for press in range(PRESSES):
                    mode = (press + 1) % MODES
                    selector = (
                        f'[data-device="acme/dev-1"] .led-cell:nth-child({2 + mode % 4}) '
                        f".led-{LED_CLASSES[mode // 4]}"
                    )
                    await asyncio.sleep(0.15)  # under the device's event rate limit
                    started = time.monotonic()
                    await client.press(MODE_BUTTON)
                    await page.wait_for_selector(selector, timeout=5_000)
                    took.append(time.monotonic() - started)
                await browser.close()
    finally:
        await app.stop(grace_s=0.5)
    return took


def run() -> None:
    print("\nConsole: a device's Mode press -> the fleet page shows it (Debian chromium, no reload):")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("  skipped: chromium is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        took = asyncio.run(measure(Path(tmp), chromium))
    ms = [t * 1000 for t in took]
    print(
        f"  press -> page: median {statistics.median(ms):5.1f} ms, p99 {percentile(ms, 0.99):5.1f} ms, "
        f"max {max(ms):5.1f} ms ({len(ms)} presses)"
    )


if __name__ == "__main__":
    run()
