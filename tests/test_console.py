"""The web console in a real browser (Debian's chromium, driven by Playwright) against a real server.

Each browser test saves a screenshot under ``test-artifacts/console/`` so a person can see what
the test saw.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from playwright.async_api import Browser, Page, async_playwright

from admin.client import FleetClient
from auth import pki as pki_lib
from auth.operators import OperatorIdentity, Role
from auth.revocation import revoke
from comms.gen import admin_pb2 as apb
from comms.tasks import cancel_and_wait
from device.audio_sink import RecordingSink
from server.app import AudioServer
from server.operator import sign_in as console_sessions
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, heard_clip, mode_of, reload_attempt, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import wav_bytes
from tests.test_admin_cli import cli, provision

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LIVE_TIMEOUT_MS = 1_000  # the page follows a change within a second, without reload (bench: p99 ~60 ms)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: make test installs Debian's chromium (WITH_BROWSER=1)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


async def login_link(app: AudioServer, pki: EphemeralPki, tenant: str | None, role: str, name: str) -> str:
    async with FleetClient(f"127.0.0.1:{app.admin_port}", pki.operator_tls(tenant, name, role)) as client:
        login = await client.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())
    return login.url


async def signed_in(
    browser: Browser,
    app: AudioServer,
    pki: EphemeralPki,
    role: str = "admin",
    tenant: str | None = "acme",
    width: int = 1280,
) -> Page:
    context = await browser.new_context(ignore_https_errors=True, viewport={"width": width, "height": 900})
    page = await context.new_page()
    await page.goto(await login_link(app, pki, tenant, role, f"{role}-op"))
    assert page.url.endswith("/"), page.url  # the link is gone from the address bar
    return page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def led_class(mode: int) -> str:
    return f'[data-device="acme/dev-1"] .led-cell:nth-child({2 + mode % 4}) .led'


async def test_the_fleet_page_is_live_and_shows_only_the_tenants_devices(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    async with connect(console, "acme", "dev-1") as device, connect(console, "globex", "dev-9"):
        await wait_for(lambda: device.status_requests >= 1)
        page = await signed_in(browser, console, pki)
        row = page.locator('[data-device="acme/dev-1"]')
        assert await row.locator('[data-field="state"]').inner_text() == "online"
        assert await page.locator('[data-device^="globex/"]').count() == 0
        assert "globex" not in await page.content()
        await page.wait_for_function("document.body.dataset.live === 'connected'")
        await device.press(MODE)  # mode 1: LED 3 lights white, without a reload
        await page.wait_for_selector(f"{led_class(1)}.led-white", timeout=LIVE_TIMEOUT_MS)
        assert await row.locator('[data-field="mode"]').inner_text() == "1"
        assert "3: white" in await row.locator('[data-field="leds"]').inner_text()  # text beside colour
        async with connect(console, "acme", "dev-2"):  # a new device appears, counted
            await page.wait_for_selector('[data-device="acme/dev-2"]', timeout=LIVE_TIMEOUT_MS)
            await page.wait_for_function(
                "document.querySelector('[data-count=\"online\"]').textContent === '2'"
            )
            await shot(page, "fleet-1280")
    await page.wait_for_selector('[data-device="acme/dev-1"][data-state="offline"]', timeout=LIVE_TIMEOUT_MS)


async def test_device_actions_play_stop_and_revoke_from_the_browser(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    sink = RecordingSink()
    async with connect(console, "acme", "dev-1", sink=sink) as device:
        await wait_for(lambda: device.status_requests >= 1)
        page = await signed_in(browser, console, pki)
        await page.click('a[href="/devices/acme/dev-1"]')
        await page.select_option('select[name="mode"]', "1")
        await page.click('button:has-text("Set mode")')
        await wait_for(lambda: mode_of(device.view.leds) == 1)
        await page.focus('button:has-text("Play")')  # keyboard operable
        await page.keyboard.press("Enter")
        await page.wait_for_selector('.done:has-text("Play pressed")')
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets > 30)
        heard = sink.sounds[0].pcm[: 48_000 // 2]
        assert heard_clip(heard, console.sounds.library.clip_for(1).pcm[:48_000])  # type: ignore[union-attr]
        await page.wait_for_selector('[data-field="progress"]:not([hidden])', timeout=LIVE_TIMEOUT_MS)
        await page.click('button:has-text("Stop")')
        await wait_for(lambda: sink.sounds[0].ended)  # the sound ends with is_end
        await page.click('a:has-text("Revoke")')
        assert "/confirm/revoke" in page.url  # a confirmation first
        await page.click('button:has-text("Yes, revoke")')
        await wait_for(lambda: len(device.ends) == 3, timeout=2)
        assert {end.code for end in device.ends.values()} == {grpc.StatusCode.PERMISSION_DENIED}
        await page.wait_for_selector('[data-field="state"]:has-text("revoked")', timeout=LIVE_TIMEOUT_MS)
        events = await page.locator('[data-field="events"]').inner_text()
        assert "RevokeDevice: OK" in events and "Play: OK" in events
        await shot(page, "device-revoked")


async def test_a_viewer_sees_no_actions_and_a_hand_made_post_is_refused_and_audited(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    async with connect(console, "acme", "dev-1") as device:
        await wait_for(lambda: device.status_requests >= 1)
        page = await signed_in(browser, console, pki, role="viewer", width=390)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # usable on a phone: nothing wider than the screen
        await shot(page, "fleet-390-viewer")
        await page.goto(page.url + "devices/acme/dev-1")
        assert await page.locator("button:has-text('Play')").count() == 0
        assert await page.locator("text=Revoke").count() == 0
        csrf = await page.evaluate("document.querySelector('input[name=csrf]').value")
        posted = await page.request.post(
            page.url.replace("/devices/acme/dev-1", "/devices/acme/dev-1/play"), form={"csrf": csrf}
        )
        assert posted.status == 403
        not_csrf = await page.request.post(
            page.url.replace("/devices/acme/dev-1", "/devices/acme/dev-1/play"), form={}
        )
        assert not_csrf.status == 403
        await shot(page, "device-viewer")
    refused, _ = await console.audit.list("acme", 10)  # type: ignore[union-attr]
    assert [(e.action, e.result, e.role) for e in refused][:2] == [
        ("console:/devices/acme/dev-1/play", "PERMISSION_DENIED", "viewer"),
        ("Play", "PERMISSION_DENIED", "viewer"),
    ]
    assert refused[0].parameters.get("reason") == "csrf"  # the POST without its CSRF token


async def test_another_tenants_device_is_404_like_a_missing_one_and_never_streamed(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    async with connect(console, "acme", "dev-1") as mine, connect(console, "globex", "dev-9") as theirs:
        await wait_for(lambda: mine.status_requests >= 1 and theirs.status_requests >= 1)
        page = await signed_in(browser, console, pki)
        base = page.url.rstrip("/")
        foreign = await page.goto(f"{base}/devices/globex/dev-9")
        foreign_text = await page.locator("main").inner_text()
        missing = await page.goto(f"{base}/devices/acme/no-such")
        missing_text = await page.locator("main").inner_text()
        assert foreign is not None and missing is not None
        assert foreign.status == missing.status == 404
        assert foreign_text.replace("globex/dev-9", "X") == missing_text.replace("acme/no-such", "X")
        preview = await page.request.get(f"{base}/sounds/globex/0/preview.wav")
        assert preview.status == 404
        await page.goto(base + "/")
        await page.wait_for_function("document.body.dataset.live === 'connected'")
        await theirs.press(MODE)  # a globex change: must not reach acme's page
        await mine.press(MODE)
        await page.wait_for_selector(f"{led_class(1)}.led-white", timeout=LIVE_TIMEOUT_MS)
        assert await page.locator('[data-device^="globex/"]').count() == 0
        assert "globex" not in await page.content()
        await shot(page, "fleet-acme-only")


async def test_sign_in_through_the_link_the_cli_prints(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    provision(pki, "acme", "olga", Role.OPERATOR)
    code, out, err = await cli(console, pki, "console", "login", who="olga")
    assert code == 0, err
    link = out.strip().splitlines()[-1]
    assert link.startswith(f"https://127.0.0.1:{console.console_port}/login/")
    async with connect(console, "acme", "dev-1") as device:
        await wait_for(lambda: device.status_requests >= 1)
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await page.goto(link)
        assert await page.locator('[data-testid="who"]').inner_text() == "olga · acme · operator"
        assert await page.locator('[data-device="acme/dev-1"] [data-field="state"]').inner_text() == "online"
        await shot(page, "signed-in-from-cli")


async def test_sounds_page_uploads_previews_and_resets(
    console: AudioServer, pki: EphemeralPki, browser: Browser, tmp_path: Path
) -> None:
    page = await signed_in(browser, console, pki, role="operator")
    await page.click('a:has-text("Sounds")')
    upload = tmp_path / "chime.wav"
    upload.write_bytes(wav_bytes(0.8))
    await page.set_input_files('tr[data-mode="2"] input[type=file]', str(upload))
    await page.click('tr[data-mode="2"] button:has-text("Upload")')
    await page.wait_for_selector('.done:has-text("chime.wav")')
    assert "uploaded: chime.wav" in await page.locator('tr[data-mode="2"]').inner_text()
    src = await page.get_attribute('tr[data-mode="2"] audio', "src")
    assert src is not None
    preview = await page.request.get(page.url.split("/sounds")[0] + src)
    assert preview.status == 200 and preview.headers["content-type"] == "audio/wav"
    assert len(await preview.body()) > 0.7 * 48_000 * 2
    await shot(page, "sounds")
    await page.click('tr[data-mode="2"] button:has-text("Reset")')
    await page.wait_for_selector('.done:has-text("built-in")')
    await page.click('a:has-text("Audit")')
    text = await page.locator("table.audit").inner_text()
    assert "ResetSound" in text and "UploadSound" in text
    await shot(page, "audit")


# --- sign-in and headers, without a browser -----------------------------------------------------


async def test_a_link_opens_one_strict_session_once(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    link = await login_link(console, pki, "acme", "viewer", "val")
    async with http.get(link, ssl=False, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/"
        cookie = response.headers["Set-Cookie"]
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Max-Age="))
    async with http.get(link, ssl=False) as again:
        assert again.status == 403 and "used already or has expired" in await again.text()
    base = link.split("/login/")[0]
    async with http.get(base + "/", ssl=False) as page:
        assert page.status == 200
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        body = await page.text()
        assert "<script>" not in body and " style=" not in body and link.split("/login/")[1] not in body
    async with http.post(base + "/logout", data={"csrf": _csrf(body)}, ssl=False) as out:
        assert out.status == 200
    async with http.get(base + "/", ssl=False) as after:
        assert after.status == 401


async def test_an_expired_link_is_refused(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_sessions, "LOGIN_TTL_S", -1.0)
    link = await login_link(console, pki, "acme", "admin", "alice")
    async with http.get(link, ssl=False) as response:
        assert response.status == 403


async def test_sign_in_attempts_are_rate_limited(console: AudioServer, http: aiohttp.ClientSession) -> None:
    base = f"https://127.0.0.1:{console.console_port}"
    statuses = []
    for attempt in range(14):
        async with http.get(f"{base}/login/guess-{attempt}", ssl=False) as response:
            statuses.append(response.status)
    assert statuses[:10] == [403] * 10 and 429 in statuses[10:]


async def test_the_live_stream_carries_only_the_operators_tenant(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    link = await login_link(console, pki, "acme", "viewer", "val")
    async with http.get(link, ssl=False):
        pass
    base = link.split("/login/")[0]
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async with http.get(base + "/events", ssl=False) as stream:
            async for line in stream.content:
                if line.startswith(b"data: "):
                    received.append(json.loads(line[6:]))

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.2)
        async with connect(console, "globex", "dev-9") as theirs, connect(console, "acme", "dev-1") as mine:
            await theirs.press(MODE)
            await mine.press(MODE)
            started = time.monotonic()
            await wait_for(lambda: any(m["change"] == "mode" for m in received), timeout=2)
            assert time.monotonic() - started < 2
    finally:
        await cancel_and_wait(listener)
    assert received and {m["device"]["tenant"] for m in received} == {"acme"}


def _csrf(body: str) -> str:
    marker = 'name="csrf" value="'
    start = body.index(marker) + len(marker)
    return body[start : body.index('"', start)]


async def test_the_console_follows_a_rotated_server_certificate(
    server_factory: ServerFactory, pki: EphemeralPki, tmp_path: Path
) -> None:
    own = tmp_path / "pki"
    shutil.copytree(pki.root, own)
    app = await server_factory(pki_dir=own, console_bind="127.0.0.1:0", reload_interval_s=0.05)

    def served_serial() -> int:
        pem = ssl.get_server_certificate(("127.0.0.1", app.console_port))
        return x509.load_pem_x509_certificate(pem.encode()).serial_number

    assert await asyncio.to_thread(served_serial) == pki.server.cert.serial_number
    fresh = pki_lib.issue_server_cert(pki.ca, ["localhost"], ["127.0.0.1"])
    await reload_attempt(
        app.watchers,
        "server-tls",
        lambda: pki_lib.write_certified_key(fresh, own / "server.crt", own / "server.key", force=True),
        ok=True,
    )
    assert await asyncio.to_thread(served_serial) == fresh.cert.serial_number


async def test_revoking_the_operators_certificate_ends_the_console_session(
    server_factory: ServerFactory, pki: EphemeralPki, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    app = await server_factory(console_bind="127.0.0.1:0", crl_path=crl, reload_interval_s=0.05)
    operator = OperatorIdentity("mallory", Role.ADMIN, "acme")
    material = pki_lib.issue_operator_cert(pki.ca, operator)
    tls = pki.tls(material)
    async with FleetClient(f"127.0.0.1:{app.admin_port}", tls) as client:
        link = (await client.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())).url
        spare = (await client.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())).url
    async with http.get(link, ssl=False) as signed_in_page:
        assert signed_in_page.status == 200
    base = link.split("/login/")[0]
    await reload_attempt(
        app.watchers, "crl", lambda: revoke(pki.ca, crl, [material.cert.serial_number]), ok=True
    )
    async with http.get(base + "/", ssl=False) as after:
        assert after.status == 401  # the open session ended with the certificate
    async with http.get(spare, ssl=False) as unused_link:
        assert unused_link.status == 403  # and a link it made before is no good either


async def test_a_platform_operator_sees_every_tenant_and_picks_one_for_sounds(
    console: AudioServer, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    async with connect(console, "acme", "dev-1") as mine, connect(console, "globex", "dev-9") as theirs:
        await wait_for(lambda: mine.status_requests >= 1 and theirs.status_requests >= 1)
        page = await signed_in(browser, console, pki, role="viewer", tenant=None)
        assert await page.locator('[data-device="globex/dev-9"]').count() == 1
        assert await page.locator('[data-device="acme/dev-1"]').count() == 1
        await page.click('a:has-text("Sounds")')
        await page.fill('input[name="tenant"]', "globex")
        await page.click('button:has-text("Show its sounds")')
        assert await page.locator("table.sounds tbody tr").count() == 5
        await shot(page, "platform-sounds")


async def test_a_store_outage_is_a_clear_503_not_an_error(
    server_factory: ServerFactory, pki: EphemeralPki, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis", durable=True).start()
    try:
        app = await server_factory(
            console_bind="127.0.0.1:0", state_backend="redis", redis_url=redis.url, store_retry_s=0.05
        )
        link = await login_link(app, pki, "acme", "viewer", "val")
        async with http.get(link, ssl=False) as page:
            assert page.status == 200
        base = link.split("/login/")[0]
        redis.stop(kill=True)
        for path in ("/", "/login/anything"):
            async with http.get(base + path, ssl=False) as down:
                assert down.status == 503 and "try again shortly" in (await down.text()).lower()
        redis.start()
        async with http.get(base + "/", ssl=False) as back:
            assert back.status == 200  # the same session, once the store is back
    finally:
        redis.stop()


async def test_schedules_are_created_run_and_paused_from_the_browser(
    server_factory: ServerFactory, connect: Connect, pki: EphemeralPki, browser: Browser
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    app = await server_factory(console_bind="127.0.0.1:0", schedule_tick_s=0.05)
    sink = RecordingSink()
    async with connect(app, "acme", "kitchen-1", sink=sink) as device:
        await wait_for(lambda: device.status_requests >= 1)
        async with FleetClient(
            f"127.0.0.1:{app.admin_port}", pki.operator_tls("acme", "ops", "operator")
        ) as c:
            await c.stub.SetLabels(
                apb.SetLabelsRequest(
                    device=apb.DeviceRef(device_id="kitchen-1"), set=[apb.Label(key="zone", value="kitchen")]
                )
            )
        page = await signed_in(browser, app, pki, role="operator")
        await page.click('nav a[href="/schedules"]')
        assert await page.locator(".empty").inner_text() == "No schedules yet."
        form = page.locator('[data-field="create"]')
        await form.locator('input[name="selector"]').fill("zone=kitchen")
        await form.locator('input[name="mode"]').fill("2")
        await form.locator('input[value="cron"]').check()
        await form.locator('input[name="cron"]').fill("0 9 * * 1-5")
        await form.locator('input[name="tz"]').fill("Europe/Berlin")
        await form.locator('button:has-text("Create schedule")').click()
        await page.wait_for_selector('.done:has-text("created schedule")')
        weekly = page.locator("[data-schedule]").first
        assert await weekly.locator('[data-field="state"]').inner_text() == "active"
        next_runs = (await weekly.locator('[data-field="next"]').inner_text()).splitlines()
        assert len(next_runs) == 3 and all(n.endswith(" 09:00 CET") for n in next_runs), next_runs
        at = datetime.fromtimestamp(int(time.time()) + 3, ZoneInfo("Europe/Berlin"))
        await form.locator('input[name="selector"]').fill("zone=kitchen")
        await form.locator('input[name="mode"]').fill("0")
        await form.locator('input[value="at"]').check()
        await form.locator('input[name="at"]').fill(at.strftime("%Y-%m-%dT%H:%M:%S"))
        await form.locator('input[name="tz"]').fill("Europe/Berlin")
        await form.locator('button:has-text("Create schedule")').click()
        await page.wait_for_selector('.done:has-text("created schedule")')
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=8)  # the run played
        assert heard_clip(sink.sounds[0].pcm, app.sounds.library.clip_for(0).pcm)  # type: ignore[union-attr]
        schedules = await app.scheduler.store.of_tenant("acme")
        once = next(s for s in schedules if s.one_shot)

        async def recorded() -> bool:
            return bool(await app.scheduler.store.runs(once))

        deadline = time.monotonic() + 5
        while not await recorded():
            assert time.monotonic() < deadline, "the run was not recorded"
            await asyncio.sleep(0.05)
        await page.goto(page.url.split("?")[0])
        row = page.locator(f'[data-schedule="{once.id}"]')
        assert await row.locator('[data-field="state"]').inner_text() == "done"
        assert (
            "ran, 1 targeted, 1 started, 0 offline, 0 refused"
            in await row.locator('[data-field="runs"]').inner_text()
        )
        weekly_id = next(s.id for s in schedules if not s.one_shot)
        await page.click(f'button:has-text("Pause {weekly_id}")')
        await page.wait_for_selector(f'.done:has-text("paused schedule {weekly_id}")')
        paused = page.locator(f'[data-schedule="{weekly_id}"]')
        assert await paused.locator('[data-field="state"]').inner_text() == "paused"
        assert await paused.locator('[data-field="next"]').inner_text() == "-"
        await page.click(f'button:has-text("Resume {weekly_id}")')
        await page.wait_for_selector(f'.done:has-text("resumed schedule {weekly_id}")')
        await shot(page, "schedules")
        await page.click(f'button:has-text("Delete {once.id}")')
        await page.wait_for_selector(f'.done:has-text("deleted schedule {once.id}")')
        assert await page.locator("[data-schedule]").count() == 1
    events = [e.action for e in (await app.audit.list("acme", 100))[0] if e.result == "OK"]
    assert events.count("CreateSchedule") == 2 and "ScheduleRun" in events and "PauseSchedule" in events
