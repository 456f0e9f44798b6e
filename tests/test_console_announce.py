"""The console's Announce action in a real browser (Debian's chromium, Playwright): from the fleet
page's label filter, with one device unticked, and from a device page with a file sent along; the
outcome per device on the page, the sound on exactly the ticked devices, one audit event."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
import soxr
from playwright.async_api import Browser

from device.audio_sink import RecordingSink
from server.app import AudioServer
from tests.conftest import Admin, Connect
from tests.helpers import EphemeralPki, heard_clip, wait_for
from tests.test_admin_api import wav_bytes
from tests.test_announce import labelled, online
from tests.test_console import browser, shot, signed_in
from tests.test_operator_robustness import audit_events

__all__ = ["browser"]  # the fixture, used here
CHIRP = 2


async def test_the_fleet_filter_announces_to_the_ticked_devices_only(
    console: AudioServer, connect: Connect, admin: Admin, pki: EphemeralPki, browser: Browser
) -> None:
    sinks = {name: RecordingSink() for name in ("kitchen-1", "kitchen-2", "kitchen-3", "hall-1")}
    async with (
        connect(console, "acme", "kitchen-1", sink=sinks["kitchen-1"]) as k1,
        connect(console, "acme", "kitchen-2", sink=sinks["kitchen-2"]) as k2,
        connect(console, "acme", "kitchen-3", sink=sinks["kitchen-3"]) as k3,
        connect(console, "acme", "hall-1", sink=sinks["hall-1"]) as hall,
        admin(console, "acme", role="operator") as ops,
    ):
        for device, name in ((k1, "kitchen-1"), (k2, "kitchen-2"), (k3, "kitchen-3"), (hall, "hall-1")):
            await online(console, device, "acme", name)
        for name in ("kitchen-1", "kitchen-2", "kitchen-3"):
            await ops.SetLabels(labelled(name, zone="kitchen"))
        page = await signed_in(browser, console, pki, role="operator")
        await page.fill('input[name="selector"]', "zone=kitchen")
        await page.click('button:has-text("Filter")')
        await page.click('[data-testid="announce"]')  # "Announce to these 3 devices…"
        ticked = page.locator('input[name="device"]:checked')
        assert sorted(await ticked.evaluate_all("els => els.map(e => e.value)")) == [
            "kitchen-1",
            "kitchen-2",
            "kitchen-3",
        ]
        await page.uncheck('input[name="device"][value="kitchen-3"]')
        await page.check(f'input[name="sound"][value="{CHIRP}"]')
        await shot(page, "announce")
        await page.click('button:has-text("Announce")')
        said = await page.locator('[data-testid="announced"]').inner_text()
        assert "2 targeted, 2 started, 0 offline, 0 refused" in said, said
        for name in ("kitchen-1", "kitchen-2"):
            await wait_for(lambda n=name: bool(sinks[n].sounds) and sinks[n].sounds[0].ended, timeout=10)  # type: ignore[misc]
            assert heard_clip(sinks[name].sounds[0].pcm, console.sounds.library.clip_for(CHIRP).pcm)  # type: ignore[union-attr]
        await shot(page, "announce-result")
        assert not sinks["kitchen-3"].sounds and not sinks["hall-1"].sounds  # unticked, unlabelled
    events = [e for e in await audit_events(console, "acme") if e.action == "Announce"]
    assert [(e.result, e.parameters["devices"]) for e in events] == [("OK", ["kitchen-1", "kitchen-2"])]


async def test_a_device_page_announces_a_file_to_that_device(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser, tmp_path: Path
) -> None:
    sink = RecordingSink()
    clip = tmp_path / "doorbell.wav"
    clip.write_bytes(wav_bytes(1.0, freq=880.0))
    async with connect(console, "acme", "dev-1", sink=sink) as device:
        await online(console, device, "acme", "dev-1")
        page = await signed_in(browser, console, pki, role="operator")
        await page.click('a[href="/devices/acme/dev-1"]')
        await page.click('a:has-text("Announce…")')
        assert await page.locator('input[name="device"]').count() == 1
        await page.check('input[name="sound"][value="clip"]')
        await page.set_input_files('input[name="clip"]', str(clip))
        await page.uncheck('input[name="resume"]')
        await page.click('button:has-text("Announce")')
        said = await page.locator('[data-testid="announced"]').inner_text()
        assert "Announced doorbell.wav: 1 targeted, 1 started" in said, said
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=10)
        samples, rate = soundfile.read(io.BytesIO(clip.read_bytes()), dtype="float32")
        assert heard_clip(sink.sounds[0].pcm, (soxr.resample(samples, rate, 48_000) * 32767).astype(np.int16))
    events = [e for e in await audit_events(console, "acme") if e.action == "Announce"]
    assert [(e.result, e.parameters["sound"], e.parameters["resume"]) for e in events] == [
        ("OK", "doorbell.wav", False)
    ]
