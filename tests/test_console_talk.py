"""Push-to-talk from the console (issue 21): real Chromium with a fake microphone playing a WAV made
here, a real server, a real device decoding real Opus; and the WebSocket's refusals before upgrade.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from playwright.async_api import Browser, async_playwright

from auth.identity import Identity
from device.audio_sink import RecordingSink
from server.app import AudioServer
from tests.conftest import Connect
from tests.helpers import EphemeralPki, heard_clip, wait_for
from tests.test_announce import online
from tests.test_console import CHROMIUM, shot, signed_in
from tests.test_operator_robustness import _signed_in, audit_events

DOCS = Path(__file__).resolve().parent.parent / "docs"
RATE = 48_000
SETTLE = 10  # frames at the start of the talk left out (the fake microphone and the decoder settle)


def capture_signal(seconds: float = 2.0) -> npt.NDArray[np.int16]:
    """What the fake microphone says (on a loop): a chirp up and down, never the same 100 ms twice."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (300 * t + 700 * t**2 / seconds - 150 * t**3 / seconds**2)
    return (0.5 * np.sin(phase) * 32767).astype(np.int16)


def capture_file(directory: Path, pcm: npt.NDArray[np.int16]) -> Path:
    path = directory / "microphone.wav"
    soundfile.write(str(path), pcm, RATE, subtype="PCM_16")
    return path


def fake_microphone_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


@pytest.fixture
async def talking_browser(tmp_path: Path) -> AsyncIterator[tuple[Browser, npt.NDArray[np.int16]]]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: make test installs Debian's chromium (WITH_BROWSER=1)")
    said = capture_signal()
    wav = capture_file(tmp_path, said)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=fake_microphone_args(wav))
        yield launched, said
        await launched.close()


async def test_holding_talk_on_a_device_page_speaks_the_microphone_on_the_device(
    console: AudioServer,
    connect: Connect,
    pki: EphemeralPki,
    talking_browser: tuple[Browser, npt.NDArray[np.int16]],
) -> None:
    browser, said = talking_browser
    sink = RecordingSink()
    async with connect(console, "acme", "dev-1", sink=sink) as device:
        await online(console, device, "acme", "dev-1")
        page = await signed_in(browser, console, pki, role="operator")
        await page.context.grant_permissions(["microphone"])
        await page.goto(page.url.rstrip("/") + "/devices/acme/dev-1")
        button = page.locator("[data-talk]")
        status = page.locator("[data-talk-status]")
        await button.hover()
        await page.mouse.down()
        await status.filter(has_text="Talking: 1 started, 0 busy, 0 offline").wait_for(timeout=10_000)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets >= 150, timeout=10)
        await shot(page, "talk")
        await page.mouse.up()
        await wait_for(lambda: sink.sounds[0].ended, timeout=3)
        await status.filter(has_text="Talk ended (released").wait_for(timeout=5_000)
        controller = console.registry.controller(Identity("acme", "dev-1"))
        assert controller is not None
        await wait_for(lambda: controller.state.playing is None)
    heard = sink.sounds[0].pcm[SETTLE * 960 :]
    looped = np.tile(said, 1 + len(sink.sounds[0].pcm) // len(said) + 1)  # the fake microphone loops
    assert heard_clip(heard, looped)
    assert len(sink.sounds) == 1
    events = [e for e in await audit_events(console) if e.action == "Talk"]
    assert [(e.result, e.parameters["ended"], e.parameters["started_ids"]) for e in events] == [
        ("OK", "released", ["dev-1"])
    ]
    shutil.copyfile(Path(__file__).resolve().parent.parent / "test-artifacts" / "console" / "talk.png",
                    DOCS / "console-talk.png")  # fmt: skip


async def test_the_talk_socket_is_refused_before_upgrade_without_session_csrf_or_role(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    async with connect(console, "acme", "dev-1"):
        base, csrf = await _signed_in(console, pki, http, role="operator", name="talker")
        query = f"tenant=acme&device=dev-1&csrf={csrf}"
        async with (
            aiohttp.ClientSession() as stranger,  # no session cookie
            stranger.get(f"{base}/talk?{query}", ssl=False, headers=upgrade()) as answer,
        ):
            assert answer.status == 401
        async with http.get(f"{base}/talk?tenant=acme&device=dev-1", ssl=False, headers=upgrade()) as answer:
            assert answer.status == 403
        async with http.get(f"{base}/talk?{query[:-4]}xxxx", ssl=False, headers=upgrade()) as answer:
            assert answer.status == 403
        evil = {**upgrade(), "Origin": "https://evil.example"}
        async with http.get(f"{base}/talk?{query}", ssl=False, headers=evil) as answer:
            assert answer.status == 403
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as viewer_http:
            vbase, vcsrf = await _signed_in(console, pki, viewer_http, role="viewer", name="looker")
            viewer_query = f"tenant=acme&device=dev-1&csrf={vcsrf}"
            async with viewer_http.get(
                f"{vbase}/talk?{viewer_query}", ssl=False, headers=upgrade()
            ) as answer:
                assert answer.status == 403
    refusals = [e for e in await audit_events(console) if e.result != "OK"]
    assert {e.action for e in refusals} == {"console:/talk", "Talk"}


async def test_a_frame_of_the_wrong_size_ends_the_console_talk_with_a_clear_close_reason(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    sink = RecordingSink()
    async with connect(console, "acme", "dev-1", sink=sink) as device:
        await online(console, device, "acme", "dev-1")
        base, csrf = await _signed_in(console, pki, http, role="operator", name="talker")
        url = f"{base.replace('https', 'wss')}/talk?tenant=acme&device=dev-1&csrf={csrf}"
        async with http.ws_connect(url, ssl=False, origin=base) as socket:
            started = await socket.receive_json(timeout=5)
            assert (started["type"], started["started"], started["busy"]) == ("started", 1, 0)
            for _ in range(10):
                await socket.send_bytes(capture_signal(0.02).tobytes())
            await socket.send_bytes(b"\0" * 1764)  # 44.1 kHz frames
            refused = await socket.receive_json(timeout=5)
            assert (refused["type"], refused["status"]) == ("refused", 400)
            closing = await socket.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE
            assert socket.close_code == 4400
            assert closing.extra == (
                "a talk frame is 20 ms of 48 kHz mono 16-bit PCM: 1920 bytes (960 samples), not 1764"
            )
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)


def upgrade() -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def test_the_fleet_page_offers_talk_for_its_label_filter_to_operators_only(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    async with connect(console, "acme", "dev-1"):
        base, csrf = await _signed_in(console, pki, http, role="operator", name="talker")
        async with http.get(f"{base}/?selector=zone%3Dkitchen", ssl=False) as page:
            text = await page.text()
        assert f'data-talk="/talk?csrf={csrf}&amp;selector=zone%3Dkitchen"' in text
        assert "Hold Talk to speak to the devices matching zone=kitchen." in text
        async with http.get(f"{base}/", ssl=False) as page:
            assert "data-talk=" not in await page.text()  # no filter: no talk to the whole fleet here
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as viewer_http:
            vbase, _ = await _signed_in(console, pki, viewer_http, role="viewer", name="looker")
            async with viewer_http.get(f"{vbase}/?selector=zone%3Dkitchen", ssl=False) as page:
                assert "data-talk=" not in await page.text()
            async with viewer_http.get(f"{vbase}/devices/acme/dev-1", ssl=False) as page:
                assert "data-talk=" not in await page.text()


RESAMPLE_PROBE = """
async () => {
  const context = new OfflineAudioContext(1, 44100, 44100);  // one second at 44.1 kHz
  await context.audioWorklet.addModule("/static/talk-worklet.js");
  const frames = new AudioWorkletNode(context, "talk-frames");
  const got = [];
  frames.port.onmessage = (message) => got.push(Array.from(new Int16Array(message.data)));
  const tone = context.createOscillator();
  tone.frequency.value = 1000;
  tone.connect(frames);
  frames.connect(context.destination);
  tone.start();
  await context.startRendering();
  await new Promise((resolve) => setTimeout(resolve, 200));  // the last frames' messages
  return got;
}
"""


async def test_the_worklet_resamples_a_44100_hz_context_to_48_khz_frames(
    console: AudioServer, pki: EphemeralPki, talking_browser: tuple[Browser, npt.NDArray[np.int16]]
) -> None:
    browser, _ = talking_browser
    page = await signed_in(browser, console, pki, role="operator")
    frames = await page.evaluate(RESAMPLE_PROBE)
    assert 48 <= len(frames) <= 50 and {len(f) for f in frames} == {960}  # 1 s at 48 kHz: 50 frames
    pcm = np.concatenate([np.asarray(f, dtype=np.float64) for f in frames])
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak_hz = np.argmax(spectrum) * RATE / len(pcm)
    assert abs(peak_hz - 1000) < 5  # the tone keeps its pitch: the frames really are 48 kHz
