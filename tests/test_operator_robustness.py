"""Bad input on the operator API and the console gets a clear answer, every call leaves its audit
event, and no console session outlives its right (issue 18)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import soundfile
from cryptography import x509

from admin.client import FleetClient
from auth import pki as pki_lib
from auth.identity import DEFAULT_TRUST_DOMAIN
from auth.operators import OperatorIdentity, Role, operator_subject
from comms.gen import admin_pb2 as apb
from server.access.interceptor import BAD_MESSAGE_TEXT
from server.app import AudioServer
from server.audio.tenant_sounds import TenantSounds
from server.operator.api import FleetAdmin
from server.operator.console import live
from server.operator.console.web import SECURITY_HEADERS
from tests.conftest import Admin, Connect
from tests.helpers import MODE, EphemeralPki, sample, wait_for
from tests.test_admin_api import refused, talk_requests, wav_bytes
from tests.test_console import _csrf, login_link

SERVICE = "/audio.admin.v1.FleetService/"
GARBAGE = b"\xff\xff\xff"  # a truncated varint: no protobuf message parses from it
TWENTY_DIGITS = "9" * 20
REQUEST_CLASSES = {
    method.name: (method.client_streaming, method.server_streaming)
    for method in apb.DESCRIPTOR.services_by_name["FleetService"].methods
}


async def audit_events(app: AudioServer, tenant: str = "acme") -> list[Any]:
    assert app.audit is not None
    events, _ = await app.audit.list(tenant, 1000)
    return events


# --- the operator API ------------------------------------------------------------------------------


async def _send_garbage(channel: grpc.aio.Channel, name: str) -> grpc.aio.AioRpcError:
    client_streaming, server_streaming = REQUEST_CLASSES[name]
    path = SERVICE + name
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if client_streaming:

            async def requests() -> AsyncIterator[bytes]:
                yield GARBAGE

            await channel.stream_unary(path)(requests())
        elif server_streaming:
            async for _ in channel.unary_stream(path)(GARBAGE):
                pass
        else:
            await channel.unary_unary(path)(GARBAGE)
    return info.value


async def test_unparseable_bytes_on_every_method_are_refused_counted_and_audited(
    console: AudioServer, pki: EphemeralPki
) -> None:
    before = {
        name: sample("audio_admin_calls_total", method=name, code="INVALID_ARGUMENT")
        for name in REQUEST_CLASSES
    }
    async with FleetClient(
        f"127.0.0.1:{console.admin_port}", pki.operator_tls("acme", "fuzz", "admin")
    ) as client:
        for name in REQUEST_CLASSES:
            error = await _send_garbage(client.channel, name)
            assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, BAD_MESSAGE_TEXT), (
                name
            )
    events = await audit_events(console)
    refusals = [e for e in events if e.result == "INVALID_ARGUMENT" and e.operator.endswith("/operator/fuzz")]
    assert sorted(e.action for e in refusals) == sorted(REQUEST_CLASSES)  # exactly one event per call
    assert all(e.parameters.get("reason") == "malformed_request" for e in refusals)
    for name in REQUEST_CLASSES:
        counted = sample("audio_admin_calls_total", method=name, code="INVALID_ARGUMENT") - before[name]
        assert counted == 1, name


async def test_a_bug_after_a_change_landed_still_leaves_one_audit_event(
    server: AudioServer, connect: Connect, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bookkeeping bug")

    async with connect(server, "acme", "dev-1"), admin(server, "acme") as ops:
        monkeypatch.setattr(FleetAdmin, "_fresh", broken)  # runs after the revocation is stored
        error = await refused(ops.RevokeDevice(apb.DeviceRef(device_id="dev-1")))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "bookkeeping" not in error.details()
    revocations = [e for e in await audit_events(server) if e.action == "RevokeDevice"]
    assert [e.result for e in revocations] == ["INTERNAL"]


async def test_a_bug_in_the_sounds_is_internal_not_a_store_outage(
    server: AudioServer, admin: Admin, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, any exception from the sounds, history or sign-in links read as UNAVAILABLE (the
    store being down), so an operator would wait out a bug; the store's real failures are mapped
    where they happen (GuardedData) and stay UNAVAILABLE (tests/test_redis_faults.py)."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sound table bug")

    monkeypatch.setattr(TenantSounds, "list", broken)
    async with admin(server, "acme") as ops:
        error = await refused(ops.ListSounds(apb.ListSoundsRequest()))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "sound table bug" not in error.details()
    listings = [e for e in await audit_events(server) if e.action == "ListSounds"]
    assert [e.result for e in listings] == ["INTERNAL"]
    assert any(r.exc_info and "sound table bug" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize(
    "token", [TWENTY_DIGITS, f"{TWENTY_DIGITS}-0", "1-" + TWENTY_DIGITS, "²", "-1", "1-2-3"]
)
async def test_a_page_token_never_handed_out_is_invalid_argument(
    server: AudioServer, admin: Admin, token: str
) -> None:
    async with admin(server, "acme") as ops:
        error = await refused(ops.ListAuditEvents(apb.ListAuditEventsRequest(page_token=token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "page_token was not issued by this audit log"
    refusals = [e for e in await audit_events(server) if e.action == "ListAuditEvents"]
    assert [e.result for e in refusals] == ["INVALID_ARGUMENT"]


def _wav_claiming_rate(rate: int, seconds: float = 1.0) -> bytes:
    """A valid 44.1 kHz WAV whose header then claims ``rate``."""
    data = bytearray(wav_bytes(seconds))
    struct.pack_into("<II", data, 24, rate, rate * 2)  # fmt chunk: sample rate, byte rate (mono, 16 bit)
    return bytes(data)


async def _upload(ops: Any, data: bytes, mode: int = 1) -> Any:
    async def chunks() -> AsyncIterator[apb.UploadSoundChunk]:
        yield apb.UploadSoundChunk(mode=mode, filename="odd.wav", data=data)

    return await ops.UploadSound(chunks())


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_wav_claiming_rate(2_000_000_000), "sample rate 2000000000 Hz is outside"),
        (_wav_claiming_rate(1), "sample rate 1 Hz is outside"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "not a readable audio file"),
        (b"\x00" * 4096, "not a readable audio file"),
    ],
    ids=["2 GHz", "1 Hz", "broken header", "zeros"],
)
async def test_an_upload_that_is_no_sound_is_refused_in_our_words(
    server: AudioServer, admin: Admin, data: bytes, says: str
) -> None:
    async with admin(server, "acme") as ops:
        error = await refused(_upload(ops, data))
        listing = await ops.ListSounds(apb.ListSoundsRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in error.details()
    for internal in ("0x", "BytesIO", "Error opening", "Format not recognised", "libsndfile"):
        assert internal not in error.details()
    assert [s.source for s in listing.sounds] == ["builtin"] * len(listing.sounds)  # nothing changed


async def test_a_sound_that_resamples_to_nothing_is_refused(server: AudioServer, admin: Admin) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(3, dtype=np.float32), 8_000, format="WAV", subtype="PCM_16")
    async with admin(server, "acme") as ops:
        error = await refused(_upload(ops, buffer.getvalue()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "less than one audio frame" in error.details()


async def test_a_good_upload_is_answered_ok_and_audited_ok(
    server: AudioServer, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    """Once answered UNAVAILABLE (its log line could not be written) though the sound was stored."""
    caplog.set_level(logging.INFO)
    async with admin(server, "acme") as ops:
        sound = await _upload(ops, wav_bytes(1.0))
    assert sound.filename == "odd.wav" and sound.length_s == pytest.approx(1.0, abs=0.01)
    uploads = [e for e in await audit_events(server) if e.action == "UploadSound"]
    assert [e.result for e in uploads] == ["OK"]
    assert any(r.getMessage() == "sounds.uploaded" for r in caplog.records)


# --- the console ---------------------------------------------------------------------------------------


async def _signed_in(
    app: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession, **kw: Any
) -> tuple[str, str]:
    """Sign ``http`` in as an acme admin: (base URL, CSRF token)."""
    link = await login_link(
        app, pki, kw.get("tenant", "acme"), kw.get("role", "admin"), kw.get("name", "eve")
    )
    base = link.split("/login/")[0]
    async with http.get(link, ssl=False) as page:
        assert page.status == 200
        return base, _csrf(await page.text())


def _has_security_headers(response: aiohttp.ClientResponse) -> bool:
    return all(response.headers.get(name) == value for name, value in SECURITY_HEADERS.items())


BAD_NUMBERS = ["²", "٣", TWENTY_DIGITS, "-1", "1.5", " 1", "0x1", "99999"]


async def test_every_console_route_answers_bad_numbers_with_400_and_the_headers(
    console: AudioServer,
    connect: Connect,
    pki: EphemeralPki,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with connect(console, "acme", "dev-1"):
        base, csrf = await _signed_in(console, pki, http)
        for bad in BAD_NUMBERS:
            quoted = aiohttp.helpers.quote(bad, safe="")  # type: ignore[attr-defined]
            probes = [
                http.get(f"{base}/?mode={quoted}", ssl=False),
                http.get(f"{base}/sounds/acme/{quoted}/preview.wav", ssl=False),
                http.post(f"{base}/devices/acme/dev-1/mode", data={"csrf": csrf, "mode": bad}, ssl=False),
                http.post(f"{base}/sounds/acme/{quoted}/reset", data={"csrf": csrf}, ssl=False),
                http.post(f"{base}/sounds/acme/{quoted}/upload", data={"csrf": csrf}, ssl=False),
                http.get(f"{base}/announce?mode={quoted}", ssl=False),
                http.post(
                    f"{base}/announce", data={"csrf": csrf, "device": "dev-1", "sound": bad}, ssl=False
                ),
            ]
            for probe in probes:
                async with probe as response:
                    assert response.status == 400, (bad, response.url)
                    assert _has_security_headers(response), response.url
                    text = await response.text()
                    assert "mode" in text and "Traceback" not in text
        async with http.get(f"{base}/audit?page={TWENTY_DIGITS}", ssl=False) as response:
            assert response.status == 400 and _has_security_headers(response)
            assert "page_token was not issued" in await response.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


async def test_every_error_page_carries_the_security_headers(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"https://127.0.0.1:{console.console_port}"
    async with http.get(f"{base}/", ssl=False) as unsigned:
        assert unsigned.status == 401 and _has_security_headers(unsigned)
    async with http.get(f"{base}/login/nope", ssl=False) as used:
        assert used.status == 403 and _has_security_headers(used)
    base, _ = await _signed_in(console, pki, http)
    async with http.get(f"{base}/no/such/page", ssl=False) as missing:
        assert missing.status == 404 and _has_security_headers(missing)
    async with http.post(f"{base}/logout", data={"csrf": "wrong"}, ssl=False) as forged:
        assert forged.status == 403 and _has_security_headers(forged)

    async def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in a handler")

    assert console.console is not None
    monkeypatch.setattr(console.console.admin, "invoke", bug)
    async with http.get(f"{base}/", ssl=False) as broken:
        assert broken.status == 500 and _has_security_headers(broken)
        text = await broken.text()
        assert "internal error" in text and "a bug in a handler" not in text and "Traceback" not in text
    monkeypatch.undo()

    async def store_down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the store is away")

    assert console.console is not None
    monkeypatch.setattr(console.console.sessions, "get", store_down)
    async with http.get(f"{base}/", ssl=False) as unavailable:
        assert unavailable.status == 503 and _has_security_headers(unavailable)
    monkeypatch.undo()
    for attempt in range(20):
        async with http.get(f"{base}/login/guess-{attempt}", ssl=False) as limited:
            if limited.status == 429:
                assert _has_security_headers(limited)
                break
    else:
        pytest.fail("sign-in attempts were never rate-limited")


async def test_a_console_session_ends_when_its_operator_certificate_expires(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    operator = OperatorIdentity("brief", Role.ADMIN, "acme")
    uri = x509.UniformResourceIdentifier(operator.spiffe_id(DEFAULT_TRUST_DOMAIN))
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
    short = pki_lib.issue_certificate(
        pki.ca, str(operator), [uri], server=False, subject=operator_subject(operator), not_after=expires
    )
    async with FleetClient(f"127.0.0.1:{console.admin_port}", pki.tls(short)) as client:
        login = await client.stub.CreateConsoleLogin(apb.CreateConsoleLoginRequest())
    assert login.expires_unix <= expires.timestamp()
    async with http.get(login.url, ssl=False, allow_redirects=False) as opened:
        cookie = opened.headers["Set-Cookie"]
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 4  # the browser drops it with the certificate...
    base = login.url.split("/login/")[0]
    async with http.get(f"{base}/", ssl=False) as page:
        assert page.status == 200
    statuses: list[int] = []

    async def refused_now() -> bool:
        async with http.get(f"{base}/", ssl=False) as again:  # ...and the server refuses it after that
            statuses.append(again.status)
            return again.status == 401

    for _ in range(150):
        if await refused_now():
            break
        await asyncio.sleep(0.1)
    assert statuses[-1] == 401 and set(statuses) <= {200, 401}


async def _stream_lines(http: aiohttp.ClientSession, url: str, lines: list[bytes]) -> int:
    async with http.get(url, ssl=False) as stream:
        if stream.status != 200:
            return stream.status
        async for line in stream.content:
            lines.append(line)
    return 200


async def test_the_live_stream_ends_at_sign_out_while_the_fleet_is_busy(
    console: AudioServer, connect: Connect, pki: EphemeralPki, http: aiohttp.ClientSession
) -> None:
    """Once re-checked only after 15 s without an update: a steady fleet kept it open for ever."""
    async with connect(console, "acme", "dev-1") as device:
        base, csrf = await _signed_in(console, pki, http)
        lines: list[bytes] = []
        stream = asyncio.create_task(_stream_lines(http, f"{base}/events", lines))
        stop_pressing = asyncio.Event()

        async def busy_fleet() -> None:
            for _ in range(2_000):  # bounded: about 100 s at most
                if stop_pressing.is_set():
                    return
                await device.press(MODE)
                await asyncio.sleep(0.05)

        presser = asyncio.create_task(busy_fleet())
        try:
            await wait_for(lambda: sum(line.startswith(b"data: ") for line in lines) >= 5, timeout=10)
            async with http.post(f"{base}/logout", data={"csrf": csrf}, ssl=False) as out:
                assert out.status == 200
            seen_at_sign_out = len(lines)
            assert await asyncio.wait_for(stream, timeout=10) == 200  # the stream ended by itself
            assert not presser.done()  # while the fleet was still busy
            assert len(lines) - seen_at_sign_out < 100
        finally:
            stop_pressing.set()
            await presser


async def test_live_streams_are_capped_per_session(
    console: AudioServer, pki: EphemeralPki, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert console.console is not None
    monkeypatch.setattr(console.console, "_live", live.LiveStreams(per_session=2, per_operator=3))
    base, _ = await _signed_in(console, pki, http)
    opened = [await http.get(f"{base}/events", ssl=False) for _ in range(2)]
    try:
        assert [r.status for r in opened] == [200, 200]
        async with http.get(f"{base}/events", ssl=False) as third:
            assert third.status == 429 and _has_security_headers(third)
            assert "Too many live pages" in await third.text()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other_browser:
            await _signed_in(console, pki, other_browser)  # the same operator, a second session
            async with other_browser.get(f"{base}/events", ssl=False) as fourth:
                assert fourth.status == 200  # its own session's first: the operator's third
                async with other_browser.get(f"{base}/events", ssl=False) as fifth:
                    assert fifth.status == 429  # the operator's cap
    finally:
        for response in opened:
            response.close()
    # closing streams frees their places
    await wait_for(lambda: console.console is not None and console.console._live.open("x", "y"), timeout=5)


HUGE = 2**32 - 1


def label_request(key: str, value: str) -> apb.SetLabelsRequest:
    return apb.SetLabelsRequest(
        device=apb.DeviceRef(device_id="dev-1"), set=[apb.Label(key=key, value=value)]
    )


LONG = "x" * 10_000


def _odd_requests(ops: Any) -> dict[str, Callable[[], list[Any]]]:
    """Per FleetService method: calls with oversized values and enum numbers protobuf does not know.
    Made when their method's turn comes (a gRPC call starts when it is made, and all of them at
    once would exceed the listener's concurrent streams)."""
    long_ref = apb.DeviceRef(device_id=LONG)
    dev_1 = apb.DeviceRef(device_id="dev-1")
    bad_refs = [long_ref, apb.DeviceRef(device_id=""), apb.DeviceRef(device_id="DEV 1")]

    async def chunks(mode: int) -> AsyncIterator[apb.UploadSoundChunk]:
        yield apb.UploadSoundChunk(mode=mode, filename="a.wav", data=wav_bytes(0.1))

    async def odd_talk() -> AsyncIterator[apb.TalkRequest]:
        yield apb.TalkRequest(pcm=b"\0" * 1920)  # frames before the start

    async def first(call: Any) -> Any:
        async for update in call:
            return update
        return None

    return {
        "ListDevices": lambda: [
            ops.ListDevices(apb.ListDevicesRequest(online=99)),  # type: ignore[arg-type]
            ops.ListDevices(apb.ListDevicesRequest(search=LONG)),
            ops.ListDevices(apb.ListDevicesRequest(page_token=LONG)),
            ops.ListDevices(apb.ListDevicesRequest(tenant=LONG)),
            ops.ListDevices(apb.ListDevicesRequest(selector=LONG)),
            ops.ListDevices(apb.ListDevicesRequest(selector="zone")),
            ops.ListDevices(apb.ListDevicesRequest(selector="zone=a,,floor=2")),
            ops.ListDevices(apb.ListDevicesRequest(selector="zone=a,zone=b")),
        ],
        "GetDevice": lambda: [ops.GetDevice(r) for r in bad_refs],
        "ListDeviceEvents": lambda: [ops.ListDeviceEvents(r) for r in bad_refs],
        "WatchDevices": lambda: [first(ops.WatchDevices(apb.WatchDevicesRequest(tenant=LONG)))],
        "ListAuditEvents": lambda: [
            ops.ListAuditEvents(apb.ListAuditEventsRequest(action=LONG)),
            ops.ListAuditEvents(apb.ListAuditEventsRequest(device_id=LONG)),
            ops.ListAuditEvents(apb.ListAuditEventsRequest(operator=LONG)),
            ops.ListAuditEvents(apb.ListAuditEventsRequest(page_token=LONG)),
        ],
        "ListSounds": lambda: [ops.ListSounds(apb.ListSoundsRequest(tenant=LONG))],
        "SetMode": lambda: [
            ops.SetMode(apb.SetModeRequest(device=apb.DeviceRef(device_id="dev-1"), mode=HUGE)),
            ops.SetMode(apb.SetModeRequest(device=long_ref, mode=1)),
        ],
        "Play": lambda: [ops.Play(r) for r in bad_refs],
        "Stop": lambda: [ops.Stop(r) for r in bad_refs],
        "Disconnect": lambda: [ops.Disconnect(r) for r in bad_refs],
        "UploadSound": lambda: [ops.UploadSound(chunks(HUGE))],
        "ResetSound": lambda: [ops.ResetSound(apb.ResetSoundRequest(mode=HUGE))],
        "RevokeDevice": lambda: [ops.RevokeDevice(r) for r in bad_refs],
        "UnrevokeDevice": lambda: [ops.UnrevokeDevice(r) for r in bad_refs],
        "CreateConsoleLogin": lambda: [],  # takes no values
        "CreateEnrollments": lambda: [
            ops.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id=LONG)),
            ops.CreateEnrollments(apb.CreateEnrollmentsRequest(count=HUGE, prefix="p-")),
            ops.CreateEnrollments(apb.CreateEnrollmentsRequest(count=2, prefix=LONG)),
            ops.CreateEnrollments(apb.CreateEnrollmentsRequest(device_id="x", ttl_s=1e300)),
            ops.CreateEnrollments(apb.CreateEnrollmentsRequest(tenant=LONG, device_id="x")),
        ],
        "ListEnrollments": lambda: [ops.ListEnrollments(apb.ListEnrollmentsRequest(tenant=LONG))],
        "CancelEnrollment": lambda: [
            ops.CancelEnrollment(apb.CancelEnrollmentRequest(id=LONG)),
            ops.CancelEnrollment(apb.CancelEnrollmentRequest(tenant=LONG, id="0123456789abcdef")),
        ],
        "GetClaimCode": lambda: [ops.GetClaimCode(apb.ClaimCodeRequest(tenant=LONG))],
        "SetClaimCode": lambda: [ops.SetClaimCode(apb.ClaimCodeRequest(tenant=LONG))],
        "DisableClaimCode": lambda: [ops.DisableClaimCode(apb.ClaimCodeRequest(tenant=LONG))],
        "ListPendingEnrollments": lambda: [ops.ListPendingEnrollments(apb.ClaimCodeRequest(tenant=LONG))],
        "ApproveEnrollment": lambda: [
            ops.ApproveEnrollment(apb.DecideEnrollmentRequest(id=LONG)),
            ops.ApproveEnrollment(apb.DecideEnrollmentRequest(id="0123456789abcdef", device_id=LONG)),
            ops.ApproveEnrollment(apb.DecideEnrollmentRequest(tenant=LONG, id="0123456789abcdef")),
        ],
        "DenyEnrollment": lambda: [
            ops.DenyEnrollment(apb.DecideEnrollmentRequest(id=LONG)),
            ops.DenyEnrollment(apb.DecideEnrollmentRequest(id="0123456789abcdef", device_id="x")),
        ],
        "SetLabels": lambda: [
            *(ops.SetLabels(apb.SetLabelsRequest(device=r)) for r in bad_refs),
            ops.SetLabels(label_request(LONG, "a")),
            ops.SetLabels(label_request("zone", LONG)),
            ops.SetLabels(label_request("Zone", "a")),
            ops.SetLabels(label_request("zone", "a b")),
            ops.SetLabels(label_request("", "a")),
            ops.SetLabels(apb.SetLabelsRequest(device=dev_1, remove=[LONG])),
            ops.SetLabels(
                apb.SetLabelsRequest(device=dev_1, set=[apb.Label(key=f"k{i}", value="v") for i in range(17)])
            ),
            ops.SetLabels(apb.SetLabelsRequest(device=dev_1, remove=["k"] * 10_000)),
        ],
        "Announce": lambda: [
            ops.Announce(apb.AnnounceRequest(selector="all", mode=0, priority=HUGE)),
            ops.Announce(apb.AnnounceRequest(selector="all", mode=HUGE)),
            ops.Announce(apb.AnnounceRequest(selector="all", sound_name=LONG)),
            ops.Announce(apb.AnnounceRequest(selector="all", sound_name="nope")),
            ops.Announce(apb.AnnounceRequest(selector="all")),
            ops.Announce(apb.AnnounceRequest(mode=0)),
            ops.Announce(apb.AnnounceRequest(selector="all", device_ids=["dev-1"], mode=0)),
            ops.Announce(apb.AnnounceRequest(selector=LONG, mode=0)),
            ops.Announce(apb.AnnounceRequest(selector="zone=a,,b=c", mode=0)),
            ops.Announce(apb.AnnounceRequest(device_ids=[LONG], mode=0)),
            ops.Announce(apb.AnnounceRequest(device_ids=["DEV 1"], mode=0)),
            ops.Announce(apb.AnnounceRequest(device_ids=["no-such"], mode=0)),
            ops.Announce(apb.AnnounceRequest(device_ids=[f"d{i}" for i in range(1001)], mode=0)),
            ops.Announce(apb.AnnounceRequest(tenant=LONG, selector="all", mode=0)),
        ],
        "CreateSchedule": lambda: [
            ops.CreateSchedule(schedule_request(cron=LONG)),
            ops.CreateSchedule(schedule_request(cron="0 0 30 2 *")),
            ops.CreateSchedule(schedule_request(cron="* * *")),
            ops.CreateSchedule(schedule_request(at=LONG, cron="")),
            ops.CreateSchedule(schedule_request(at="2001-01-01T00:00", cron="")),
            ops.CreateSchedule(schedule_request(time_zone=LONG)),
            ops.CreateSchedule(schedule_request(time_zone="../../etc/passwd")),
            ops.CreateSchedule(schedule_request(selector=LONG)),
            ops.CreateSchedule(schedule_request(priority=HUGE)),
            ops.CreateSchedule(schedule_request(mode=HUGE)),
            ops.CreateSchedule(schedule_request(sound_name=LONG)),
            ops.CreateSchedule(schedule_request(tenant=LONG)),
        ],
        "ListSchedules": lambda: [ops.ListSchedules(apb.ListSchedulesRequest(tenant=LONG))],
        **{
            name: (
                lambda name=name: [
                    getattr(ops, name)(apb.ScheduleRef(id=LONG)),
                    getattr(ops, name)(apb.ScheduleRef(id="0123456789ab")),
                    getattr(ops, name)(apb.ScheduleRef(tenant=LONG, id="0123456789ab")),
                ]
            )
            for name in ("GetSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule")
        },
        "Talk": lambda: [
            ops.Talk(talk_requests(apb.TalkStart(selector="all", priority=HUGE))),
            ops.Talk(talk_requests(apb.TalkStart(selector="all", sample_rate=44_100))),
            ops.Talk(talk_requests(apb.TalkStart())),
            ops.Talk(talk_requests(apb.TalkStart(selector="all", device_ids=["dev-1"]))),
            ops.Talk(talk_requests(apb.TalkStart(selector=LONG))),
            ops.Talk(talk_requests(apb.TalkStart(device_ids=[LONG]))),
            ops.Talk(talk_requests(apb.TalkStart(device_ids=["no-such"]))),
            ops.Talk(talk_requests(apb.TalkStart(tenant=LONG, selector="all"))),
            ops.Talk(odd_talk()),
        ],
    }


def schedule_request(**fields: Any) -> apb.CreateScheduleRequest:
    values: dict[str, Any] = {"selector": "all", "cron": "0 9 * * *", **fields}
    if "sound_name" not in values:
        values.setdefault("mode", 0)
    return apb.CreateScheduleRequest(**values)


async def test_oversized_and_unknown_values_on_every_method_are_refused_in_our_words(
    console: AudioServer, connect: Connect, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(console, "acme", "dev-1"), admin(console, "acme", name="odd") as ops:
        requests = _odd_requests(ops)
        assert set(requests) == set(REQUEST_CLASSES)  # a new method must be listed here
        refusals = 0
        for name, calls in requests.items():
            for call in calls():
                error = await refused(call)
                refusals += 1
                # another tenant's (or a malformed) tenant is NOT_FOUND, like one that does not exist
                assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), name
                for internal in ("Traceback", "Exception", "Error", "0x", "<"):
                    assert internal not in error.details(), (name, error.details())
                assert len(error.details()) < 300
    events = [e for e in await audit_events(console) if e.operator.endswith("/operator/odd")]
    assert len(events) == refusals  # one audit event per refused call
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_every_console_route_answers_odd_input_with_a_4xx_page_and_the_headers(
    console: AudioServer,
    connect: Connect,
    pki: EphemeralPki,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert console.console is not None
    routes = {r.resource.canonical for r in console.console.app().router.routes() if r.resource is not None}
    async with connect(console, "acme", "dev-1"):
        base, csrf = await _signed_in(console, pki, http)
        long = "d" * 5000
        odd = {  # every route, with values it was not made for
            "/login/{token}": [("GET", f"/login/{long}", None)],
            "/logout": [("POST", "/logout", {"csrf": "x" * 5000})],
            "/": [("GET", f"/?online=sideways&q={long}&mode=1e9", None)],
            "/events": [("GET", f"/events?device={long}", None)],
            "/devices/{tenant}/{device}": [
                ("GET", f"/devices/acme/{long}", None),
                ("GET", "/devices/ACME/DEV%201", None),
                ("GET", "/devices/globex/dev-9", None),
            ],
            "/devices/{tenant}/{device}/confirm/{action}": [
                ("GET", "/devices/acme/dev-1/confirm/explode", None)
            ],
            "/devices/{tenant}/{device}/{action}": [
                ("POST", "/devices/acme/dev-1/explode", {"csrf": csrf}),
                ("POST", f"/devices/acme/{long}/play", {"csrf": csrf}),
                ("POST", "/devices/acme/dev-1/mode", {"csrf": csrf}),
            ],
            "/sounds": [("GET", f"/sounds?tenant={long}", None)],
            "/sounds/{tenant}/{mode}/preview.wav": [("GET", f"/sounds/{long}/1/preview.wav", None)],
            "/sounds/{tenant}/{mode}/{action}": [
                ("POST", "/sounds/acme/1/explode", {"csrf": csrf}),
                ("POST", "/sounds/acme/1/upload", {"csrf": csrf, "file": "not a file"}),
            ],
            "/audit": [("GET", f"/audit?action={long}&page=abc&refused=maybe", None)],
            "/talk": [
                ("GET", f"/talk?csrf={long}&device=dev-1", None),
                ("GET", f"/talk?csrf={csrf}&device={long}", None),  # not a WebSocket
            ],
            "/enrolment": [
                ("GET", f"/enrolment?tenant={long}", None),
                ("GET", "/enrolment?tenant=globex", None),
            ],
            "/enrolment/{tenant}/codes": [
                ("POST", "/enrolment/acme/codes", {"csrf": csrf, "count": "²", "prefix": "p-"}),
                ("POST", "/enrolment/acme/codes", {"csrf": csrf, "count": TWENTY_DIGITS, "prefix": "p-"}),
                ("POST", "/enrolment/acme/codes", {"csrf": csrf, "device": "x", "ttl_hours": "-1"}),
                ("POST", "/enrolment/acme/codes", {"csrf": csrf, "device": long}),
                ("POST", "/enrolment/acme/codes", {"csrf": csrf}),
                ("POST", "/enrolment/globex/codes", {"csrf": csrf, "device": "x"}),
            ],
            "/enrolment/{tenant}/codes/{id}/cancel": [
                ("POST", f"/enrolment/acme/codes/{long}/cancel", {"csrf": csrf}),
                ("POST", "/enrolment/globex/codes/0123456789abcdef/cancel", {"csrf": csrf}),
            ],
            "/enrolment/{tenant}/requests/{id}/{action}": [
                ("POST", "/enrolment/acme/requests/0123456789abcdef/explode", {"csrf": csrf}),
                ("POST", f"/enrolment/acme/requests/{long}/approve", {"csrf": csrf}),
                (
                    "POST",
                    "/enrolment/acme/requests/0123456789abcdef/approve",
                    {"csrf": csrf, "device_id": long},
                ),
                ("POST", "/enrolment/globex/requests/0123456789abcdef/deny", {"csrf": csrf}),
            ],
            "/enrolment/{tenant}/claim/{action}": [
                ("POST", "/enrolment/acme/claim/explode", {"csrf": csrf}),
                ("POST", "/enrolment/globex/claim/enable", {"csrf": csrf}),
            ],
            "/announce": [
                ("GET", "/announce?tenant=globex", None),
                ("GET", "/announce?mode=1e9", None),
                ("GET", f"/announce?device={long}", None),
                ("POST", "/announce", {"csrf": csrf, "tenant": "acme", "sound": "0"}),
                ("POST", "/announce", {"csrf": csrf, "tenant": "acme", "device": "dev-1", "sound": "²"}),
                ("POST", "/announce", {"csrf": csrf, "tenant": "acme", "device": "dev-1", "sound": "clip"}),
                ("POST", "/announce", {"csrf": csrf, "device": "dev-1", "sound": "0", "priority": "10"}),
                ("POST", "/announce", {"csrf": csrf, "device": long, "sound": "0"}),
                ("POST", "/announce", {"csrf": csrf, "tenant": "globex", "device": "dev-9", "sound": "0"}),
            ],
            "/schedules": [
                ("GET", f"/schedules?tenant={long}", None),
                ("GET", "/schedules?tenant=globex", None),
            ],
            "/schedules/{tenant}": [
                ("POST", "/schedules/acme", {"csrf": csrf, "selector": "all", "mode": "0", "priority": "²"}),
                ("POST", "/schedules/acme", {"csrf": csrf, "selector": "all", "mode": TWENTY_DIGITS}),
                (
                    "POST",
                    "/schedules/acme",
                    {"csrf": csrf, "selector": "all", "mode": "0", "when": "cron", "cron": "0 0 30 2 *"},
                ),
                ("POST", "/schedules/acme", {"csrf": csrf, "selector": long, "mode": "0", "at": long}),
                ("POST", "/schedules/acme", {"csrf": csrf}),
                (
                    "POST",
                    "/schedules/globex",
                    {"csrf": csrf, "selector": "all", "mode": "0", "when": "cron", "cron": "0 9 * * *"},
                ),
            ],
            "/schedules/{tenant}/{id}/{action}": [
                ("POST", "/schedules/acme/0123456789ab/explode", {"csrf": csrf}),
                ("POST", f"/schedules/acme/{long}/pause", {"csrf": csrf}),
                ("POST", "/schedules/acme/0123456789ab/delete", {"csrf": csrf}),
                ("POST", "/schedules/globex/0123456789ab/resume", {"csrf": csrf}),
            ],
        }
        assert routes - {"/static"} <= set(odd), sorted(routes - set(odd))  # a new route must be listed
        for route, probes in odd.items():
            for method, path, form in probes:
                async with http.request(
                    method, base + path, data=form, ssl=False, allow_redirects=False
                ) as r:
                    if route == "/events" and r.status == 200:
                        continue  # a device filter that matches nothing: a quiet stream, closed here
                    assert 400 <= r.status < 500, (path[:80], r.status)
                    assert _has_security_headers(r), path[:80]
                    text = await r.text()
                    assert "Traceback" not in text and long not in text, path[:80]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
