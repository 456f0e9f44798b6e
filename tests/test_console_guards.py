"""Console behaviours that a one-line slip could break silently (issue 24): a session's expiry
enforced by the server, a platform operator's live page. Plain HTTP clients: the cookie is all a
browser would add."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from comms.tasks import cancel_and_wait
from server.app import AudioServer
from server.operator import sign_in as console_sessions
from server.operator.console import web as console_web
from tests.conftest import Connect
from tests.helpers import MODE, EphemeralPki, wait_for
from tests.test_console import _csrf, login_link
from tests.test_operator_guards import DEFAULT_SOUND_MAX_BYTES, wav_of_size

STREAM_END_S = 5.0  # an open live stream ends within a few heartbeats once its session expired


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """No cookie jar: each test sends the session cookie itself, as a copied cookie would be."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def sign_in(http: aiohttp.ClientSession, app: AudioServer, pki: EphemeralPki, tenant: str | None,
                  role: str = "admin") -> tuple[str, dict[str, str], str]:  # fmt: skip
    """Redeem a fresh link: (base URL, the cookie header a browser would send, the page's CSRF token)."""
    link = await login_link(app, pki, tenant, role, "alice")
    async with http.get(link, ssl=False, allow_redirects=False) as redeemed:
        assert redeemed.status == 303
        cookie = redeemed.cookies[console_web.COOKIE].value
    base = link.split("/login/")[0]
    headers = {"Cookie": f"{console_web.COOKIE}={cookie}"}
    async with http.get(base + "/", ssl=False, headers=headers) as page:
        assert page.status == 200
        return base, headers, _csrf(await page.text())


def fast_forward(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The sessions' clock, ``seconds`` ahead of the real one (the cookie jar's is not touched)."""
    monkeypatch.setattr(console_sessions, "time", SimpleNamespace(time=lambda: time.time() + seconds))


async def test_an_expired_session_is_refused_even_though_the_browser_still_sends_its_cookie(
    console: AudioServer,
    connect: Connect,
    pki: EphemeralPki,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with connect(console, "acme", "dev-1") as device:
        await wait_for(lambda: device.status_requests >= 1)
        base, cookie, csrf = await sign_in(http, console, pki, "acme")
        async with http.get(base + "/events", ssl=False, headers=cookie) as stream:
            assert stream.status == 200
            fast_forward(monkeypatch, console.settings.console_session_ttl_s + 1)
            async with asyncio.timeout(STREAM_END_S):
                while await stream.content.readany():  # heartbeats until the session is found expired
                    pass
        async with http.get(base + "/", ssl=False, headers=cookie) as page:
            assert page.status == 401 and "Sign in" in await page.text()
        async with http.get(base + "/devices/acme/dev-1", ssl=False, headers=cookie) as page:
            assert page.status == 401
        form = {"csrf": csrf}
        async with http.post(base + "/devices/acme/dev-1/play", data=form, ssl=False, headers=cookie) as post:
            assert post.status == 401
        async with http.get(base + "/events", ssl=False, headers=cookie) as late:
            assert late.status == 401
    events, _ = await console.audit.list("acme", 10)  # type: ignore[union-attr]
    assert "Play" not in {e.action for e in events}  # the refused POST did nothing


async def test_a_platform_operators_live_page_carries_every_tenants_changes(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    base, cookie, _ = await sign_in(http, console, pki, None, role="viewer")
    received: list[dict[str, Any]] = []
    opened = asyncio.Event()

    async def listen() -> None:
        async with http.get(base + "/events", ssl=False, headers=cookie) as stream:
            assert stream.status == 200
            opened.set()
            async for line in stream.content:
                if line.startswith(b"data: "):
                    received.append(json.loads(line[6:]))

    def mode_change_of(tenant: str) -> bool:
        return any(m["change"] == "mode" and m["device"]["tenant"] == tenant for m in received)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(opened.wait(), 5)
        async with connect(console, "acme", "dev-1") as acme, connect(console, "globex", "dev-9") as globex:
            await acme.press(MODE)
            await globex.press(MODE)
            await wait_for(lambda: mode_change_of("acme") and mode_change_of("globex"), timeout=2)
    finally:
        await cancel_and_wait(listener)


async def test_a_quiet_live_stream_outlives_its_heartbeats(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A heartbeat's timeout once cancelled the watch under it: the stream ended after 15 quiet s."""
    monkeypatch.setattr(console_web, "HEARTBEAT_S", 0.05)
    base, cookie, _ = await sign_in(http, console, pki, "acme", role="viewer")
    async with http.get(base + "/events", ssl=False, headers=cookie) as stream:
        heartbeats = 0
        while heartbeats < 3:
            line = await asyncio.wait_for(stream.content.readline(), 5)
            assert line, "the stream ended"
            heartbeats += line == b": keep-alive\n"
        async with connect(console, "acme", "dev-1") as device:
            await device.press(MODE)
            while b'"change":"mode"' not in (line := await asyncio.wait_for(stream.content.readline(), 5)):
                assert line, "the stream ended"


async def test_a_console_upload_at_the_size_limit_is_accepted_and_one_byte_more_refused(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    limit = console.sounds.max_bytes  # type: ignore[union-attr]
    assert limit == DEFAULT_SOUND_MAX_BYTES
    at_limit = wav_of_size(limit, freq=440.0)
    base, cookie, csrf = await sign_in(http, console, pki, "acme", role="operator")

    async def upload(data: bytes) -> aiohttp.ClientResponse:
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("file", io.BytesIO(data), filename="limit.wav", content_type="audio/wav")
        url = base + "/sounds/acme/3/upload"
        async with http.post(url, data=form, ssl=False, headers=cookie, allow_redirects=False) as response:
            await response.read()
            return response

    over = await upload(at_limit + b"\0")
    assert over.status == 400
    assert (await console.sounds.table("acme")) == {}  # type: ignore[union-attr]  # nothing changed
    accepted = await upload(at_limit)
    assert accepted.status == 303 and "limit.wav" in accepted.headers["Location"]
    stored = (await console.sounds.table("acme"))[3]  # type: ignore[union-attr]
    assert stored.sha256 == hashlib.sha256(at_limit).hexdigest()  # all of it, not a truncated copy


async def test_a_busy_live_stream_still_ends_when_its_session_expires(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Changes every 0.1 s: never a quiet spell, yet the session is rechecked."""
    base, cookie, _ = await sign_in(http, console, pki, "acme", role="viewer")
    async with connect(console, "acme", "dev-1") as device:

        async def keep_pressing() -> None:
            while True:
                await device.press(MODE)
                await asyncio.sleep(0.1)

        presser = asyncio.create_task(keep_pressing())
        try:
            async with http.get(base + "/events", ssl=False, headers=cookie) as stream:
                while b'"change":"mode"' not in await asyncio.wait_for(stream.content.readline(), 5):
                    pass
                fast_forward(monkeypatch, console.settings.console_session_ttl_s + 1)
                async with asyncio.timeout(STREAM_END_S):
                    while await stream.content.readline():
                        pass
            assert not presser.done()  # the fleet stayed busy throughout
        finally:
            presser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await presser
