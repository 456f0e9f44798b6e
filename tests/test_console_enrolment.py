"""The console's Enrolment page against a real server with enrolment on: codes made on the page
(shown once) and cancelled, the claim code enabled by an admin, a real device's request approved
from the page in a real browser (Debian's chromium, Playwright); the roles, CSRF and tenants apart
as on every other console page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser

from auth.identity import Identity
from comms.gen import admin_pb2 as apb
from device.enrol import ClaimAs, enrol, new_request
from server.app import AudioServer
from server.state.enrolment_codes import normalise
from tests.conftest import Admin, ServerFactory
from tests.helpers import EphemeralPki
from tests.test_console import _csrf, browser, login_link, shot, signed_in
from tests.test_enrolment import audit_of, enroll_call
from tests.test_enrolment_approval import claim_call, new_key, until_pending

__all__ = ["browser"]  # the fixture, used here


@pytest.fixture
async def enrolment_console(server_factory: ServerFactory, pki: EphemeralPki) -> AudioServer:
    pki.issuing_ca()
    return await server_factory(
        console_bind="127.0.0.1:0", enroll_bind="127.0.0.1:0", enroll_poll_interval_s=0.1
    )


async def test_codes_are_made_on_the_page_and_a_claimed_device_is_approved_from_it(
    enrolment_console: AudioServer, pki: EphemeralPki, admin: Admin, browser: Browser, tmp_path: Path
) -> None:
    app = enrolment_console
    page = await signed_in(browser, app, pki, role="admin")
    await page.click('nav a:has-text("Enrolment")')
    await page.fill('input[name="device"]', "kitchen-1")
    await page.fill('input[name="ttl_hours"]', "2")
    await page.click('button:has-text("Create codes")')
    shown = await page.locator('[data-field="created"] [data-device="kitchen-1"] code').inner_text()
    assert normalise(shown), shown  # the code itself, shown once
    await shot(page, "enrolment-code-created")
    response = await enroll_call(app, pki, shown, new_request(new_key()))  # and it works
    assert (response.tenant, response.device_id) == ("acme", "kitchen-1")
    await page.click('button:has-text("Enable open enrolment")')
    claim_code = await page.locator('[data-field="claim-code"]').inner_text()
    assert normalise(claim_code)
    await page.goto(page.url.split("/enrolment")[0] + "/enrolment")
    assert await page.locator('[data-field="claim-code"]').count() == 0  # shown once, never again
    assert "On: claim code" in await page.locator('[data-field="claim"]').inner_text()
    fingerprint = await page.locator('[data-field="fingerprint"]').inner_text()
    said: list[str] = []
    device = asyncio.create_task(
        enrol(
            f"127.0.0.1:{app.enroll_port}",
            claim_code,
            tmp_path / "pi",
            ca_fingerprint=fingerprint,
            server_name="localhost",
            claim=ClaimAs("shed-proposed", announce=said.append),
        )
    )
    (request,) = await until_pending(app, admin)
    await page.reload()
    row = page.locator(f'[data-request="{request.id}"]')
    assert request.key_fingerprint in await row.inner_text()
    await row.locator('input[name="device_id"]').fill("shed-1")
    await shot(page, "enrolment-pending")
    await row.locator('button:has-text("Approve")').click()
    await page.wait_for_selector(f'.done:has-text("approved request {request.id} (shed-1)")')
    done = await asyncio.wait_for(device, 10)
    assert done.identity == Identity("acme", "shed-1")
    await page.reload()
    assert await page.locator(f'[data-request="{request.id}"]').count() == 0  # collected
    (approved,) = await audit_of(app, "acme", "ApproveEnrollment")
    assert approved.operator.endswith("/operator/admin-op") and approved.target == "shed-1"
    await shot(page, "enrolment-approved")


async def test_many_codes_at_once_and_a_cancel_from_the_page(
    enrolment_console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    link = await login_link(enrolment_console, pki, "acme", "operator", "olga")
    base = link.split("/login/")[0]
    async with http.get(link, ssl=False) as signed:
        csrf = _csrf(await signed.text())
    form = {"csrf": csrf, "count": "3", "prefix": "hall-"}
    async with http.post(f"{base}/enrolment/acme/codes", data=form, ssl=False) as made:
        assert made.status == 200
        text = await made.text()
    assert all(f'data-device="hall-{n}"' in text for n in (1, 2, 3)) and "shown only now" in text
    assert "Enable open enrolment" not in text  # an operator may not open enrolment
    async with http.get(f"{base}/enrolment", ssl=False) as listed:
        text = await listed.text()
    assert text.count("Cancel code for hall-") == 3 and "shown only now" not in text
    code_id = text.split('data-code="', 1)[1].split('"', 1)[0]
    async with http.post(
        f"{base}/enrolment/acme/codes/{code_id}/cancel", data={"csrf": csrf}, ssl=False
    ) as cancelled:
        assert cancelled.status == 200 and "cancelled the code for hall-" in await cancelled.text()
    async with http.get(f"{base}/enrolment", ssl=False) as listed:
        assert (await listed.text()).count("Cancel code for hall-") == 2


async def test_roles_csrf_and_tenants_on_the_enrolment_page(
    enrolment_console: AudioServer, pki: EphemeralPki, admin: Admin, http: aiohttp.ClientSession
) -> None:
    app = enrolment_console
    async with admin(app, "globex", role="admin", name="gina") as globex:
        theirs = await globex.SetClaimCode(apb.ClaimCodeRequest())
    claimed = await claim_call(app, pki, theirs.code, new_request(new_key()))
    link = await login_link(app, pki, "acme", "operator", "olga")
    base = link.split("/login/")[0]
    async with http.get(link, ssl=False) as signed:
        csrf = _csrf(await signed.text())
    async with http.post(f"{base}/enrolment/acme/claim/enable", data={"csrf": csrf}, ssl=False) as r:
        assert r.status == 403  # role admin; the page shows no button, a hand-made POST is refused
    async with http.post(f"{base}/enrolment/acme/codes", data={"device": "x"}, ssl=False) as r:
        assert r.status == 403  # no CSRF token
    async with http.post(
        f"{base}/enrolment/globex/requests/{claimed.request_id}/approve", data={"csrf": csrf}, ssl=False
    ) as r:
        assert r.status == 404  # another tenant's request, like one that does not exist
    async with http.post(
        f"{base}/enrolment/acme/requests/{claimed.request_id}/approve", data={"csrf": csrf}, ssl=False
    ) as r:
        assert r.status == 404
    async with http.get(f"{base}/enrolment", ssl=False) as r:
        assert claimed.request_id not in await r.text()
    events, _ = await app.audit.list("acme", 20)  # type: ignore[union-attr]
    seen = [(e.action, e.result) for e in events]
    assert ("SetClaimCode", "PERMISSION_DENIED") in seen
    assert ("console:/enrolment/acme/codes", "PERMISSION_DENIED") in seen
    assert ("ApproveEnrollment", "NOT_FOUND") in seen
    viewer = await login_link(app, pki, "acme", "viewer", "vic")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        async with other.get(viewer, ssl=False):
            pass
        async with other.get(f"{base}/enrolment", ssl=False) as r:
            assert r.status == 403
    platform = await login_link(app, pki, None, "admin", "root")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        async with other.get(platform, ssl=False):
            pass
        async with other.get(f"{base}/enrolment", ssl=False) as r:
            assert r.status == 200 and 'name="tenant"' in await r.text()  # picks the tenant first
        async with other.get(f"{base}/enrolment?tenant=globex", ssl=False) as r:
            assert claimed.request_id in await r.text()


async def test_the_enrolment_page_fits_a_phone(
    enrolment_console: AudioServer, pki: EphemeralPki, admin: Admin, browser: Browser
) -> None:
    async with admin(enrolment_console, "acme", role="admin") as boss:
        claim = await boss.SetClaimCode(apb.ClaimCodeRequest())
        await boss.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id="kitchen-1"))
    await claim_call(enrolment_console, pki, claim.code, new_request(new_key()), proposed="porch-1")
    page = await signed_in(browser, enrolment_console, pki, role="admin", width=390)
    await page.goto(page.url + "enrolment")
    assert await page.locator("[data-request]").count() == 1
    await shot(page, "enrolment-390")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
