"""The operator API on one server: scoping, roles, commands, revocation, audit, sounds (issue 11)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from admin.client import FleetClient
from auth.tls import TlsMaterial
from comms.audio_format import SAMPLE_RATE, SAMPLES_PER_FRAME
from comms.gen import admin_pb2 as apb
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from device.audio_sink import RecordingSink
from server.app import AudioServer
from server.operator.calls import METHOD_ROLES
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import (
    MODE,
    EphemeralPki,
    auth_failures,
    counted_since,
    heard_clip,
    mode_of,
    wait_for,
)
from tests.test_security import create_session


def ref(device: str, tenant: str = "") -> apb.DeviceRef:
    return apb.DeviceRef(tenant=tenant, device_id=device)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def _upload_chunks(mode: int, data: bytes, tenant: str = "") -> AsyncIterator[apb.UploadSoundChunk]:
    yield apb.UploadSoundChunk(tenant=tenant, mode=mode, filename="tone.wav")
    for start in range(0, len(data), 256 * 1024):
        yield apb.UploadSoundChunk(data=data[start : start + 256 * 1024])


async def talk_requests(
    start: apb.TalkStart, pcm: npt.NDArray[np.int16] | None = None, pace_s: float = 0.02
) -> AsyncIterator[apb.TalkRequest]:
    """A talk: ``start``, then ``pcm`` (48 kHz mono) as 20 ms frames, one every ``pace_s``, and its end."""
    yield apb.TalkRequest(start=start)
    if pcm is None:
        return
    loop = asyncio.get_running_loop()
    began = loop.time()
    for index, at in enumerate(range(0, len(pcm) - SAMPLES_PER_FRAME + 1, SAMPLES_PER_FRAME)):
        await asyncio.sleep(max(0.0, began + index * pace_s - loop.time()))
        yield apb.TalkRequest(pcm=pcm[at : at + SAMPLES_PER_FRAME].tobytes())
    yield apb.TalkRequest(end=True)


def every_call(stub: Any, tenant: str, device: str) -> dict[str, Awaitable[Any]]:
    """One call of each FleetService method naming ``tenant``/``device``."""
    target = ref(device, tenant)
    return {
        "ListDevices": stub.ListDevices(apb.ListDevicesRequest(tenant=tenant)),
        "GetDevice": stub.GetDevice(target),
        "ListDeviceEvents": stub.ListDeviceEvents(target),
        "WatchDevices": _first(stub.WatchDevices(apb.WatchDevicesRequest(tenant=tenant))),
        "ListAuditEvents": stub.ListAuditEvents(apb.ListAuditEventsRequest(tenant=tenant)),
        "ListSounds": stub.ListSounds(apb.ListSoundsRequest(tenant=tenant)),
        "SetMode": stub.SetMode(apb.SetModeRequest(device=target, mode=1)),
        "Play": stub.Play(target),
        "Stop": stub.Stop(target),
        "Disconnect": stub.Disconnect(target),
        "UploadSound": stub.UploadSound(_upload_chunks(1, wav_bytes(0.2), tenant)),
        "ResetSound": stub.ResetSound(apb.ResetSoundRequest(tenant=tenant, mode=1)),
        "RevokeDevice": stub.RevokeDevice(target),
        "UnrevokeDevice": stub.UnrevokeDevice(target),
        "CreateEnrollments": stub.CreateEnrollments(
            apb.CreateEnrollmentsRequest(tenant=tenant, device_id=device)
        ),
        "ListEnrollments": stub.ListEnrollments(apb.ListEnrollmentsRequest(tenant=tenant)),
        "CancelEnrollment": stub.CancelEnrollment(
            apb.CancelEnrollmentRequest(tenant=tenant, id="0123456789abcdef")
        ),
        "GetClaimCode": stub.GetClaimCode(apb.ClaimCodeRequest(tenant=tenant)),
        "SetClaimCode": stub.SetClaimCode(apb.ClaimCodeRequest(tenant=tenant)),
        "DisableClaimCode": stub.DisableClaimCode(apb.ClaimCodeRequest(tenant=tenant)),
        "ListPendingEnrollments": stub.ListPendingEnrollments(apb.ClaimCodeRequest(tenant=tenant)),
        "ApproveEnrollment": stub.ApproveEnrollment(
            apb.DecideEnrollmentRequest(tenant=tenant, id="0123456789abcdef", device_id=device)
        ),
        "DenyEnrollment": stub.DenyEnrollment(
            apb.DecideEnrollmentRequest(tenant=tenant, id="0123456789abcdef")
        ),
        "SetLabels": stub.SetLabels(
            apb.SetLabelsRequest(device=target, set=[apb.Label(key="zone", value="a")])
        ),
        "Announce": stub.Announce(apb.AnnounceRequest(tenant=tenant, device_ids=[device], mode=0)),
        "CreateSchedule": stub.CreateSchedule(
            apb.CreateScheduleRequest(tenant=tenant, selector="all", mode=0, cron="0 9 * * *")
        ),
        "ListSchedules": stub.ListSchedules(apb.ListSchedulesRequest(tenant=tenant)),
        **{
            name: getattr(stub, name)(apb.ScheduleRef(tenant=tenant, id="0123456789ab"))
            for name in ("GetSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule")
        },
        "Talk": stub.Talk(talk_requests(apb.TalkStart(tenant=tenant, device_ids=[device]))),
    }


async def _first(call: Any) -> Any:
    async for update in call:
        call.cancel()
        return update
    return None


def wav_bytes(seconds: float, freq: float = 440.0, rate: int = 44_100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t) * np.minimum(1.0, t * 20)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_every_method_has_a_least_role() -> None:
    names = {m.name for m in apb.DESCRIPTOR.services_by_name["FleetService"].methods}
    assert {k.rsplit("/", 1)[-1] for k in METHOD_ROLES} == names


async def test_an_operator_lists_and_watches_only_its_own_tenant(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "dev-1"), connect(server, "globex", "dev-9"):
        async with admin(server, "acme", role="viewer") as acme:
            listing = await acme.ListDevices(apb.ListDevicesRequest())
            assert [(d.tenant, d.device_id, d.online) for d in listing.devices] == [("acme", "dev-1", True)]
            assert listing.total == 1
            device = listing.devices[0]
            assert device.node == server.fleet.node_id and device.session_id and device.cert_serial
            assert device.cert_days_left > 300 and device.connected_since_unix > 0
            assert device.leds[0].label.startswith("dim green")
            watch = acme.WatchDevices(apb.WatchDevicesRequest())
            updates = [await watch.read(), await watch.read()]
            assert [u.kind for u in updates] == [apb.DeviceUpdate.SNAPSHOT, apb.DeviceUpdate.SNAPSHOT_END]
            assert updates[0].device.device_id == "dev-1"
            watch.cancel()
        async with admin(server, None, role="viewer", name="root") as platform:
            everyone = await platform.ListDevices(apb.ListDevicesRequest())
            assert {(d.tenant, d.device_id) for d in everyone.devices} == {
                ("acme", "dev-1"),
                ("globex", "dev-9"),
            }


async def test_another_tenants_device_is_not_found_on_every_call(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "globex", "dev-9") as victim:
        async with admin(server, "acme", role="admin") as acme:
            for method, call in every_call(acme, "globex", "dev-9").items():
                assert await code_of(call) == grpc.StatusCode.NOT_FOUND, method
            # naming it without a tenant looks it up in acme: not found, like a device that never existed
            for method in ("GetDevice", "Play", "Stop", "Disconnect", "RevokeDevice"):
                missing = await refused(getattr(acme, method)(ref("dev-9")))
                nonexistent = await refused(getattr(acme, method)(ref("no-such")))
                assert missing.code() == nonexistent.code() == grpc.StatusCode.NOT_FOUND
                assert missing.details().replace("dev-9", "X") == nonexistent.details().replace(
                    "no-such", "X"
                )
        assert not victim.ends  # nothing reached it
        assert server.registry.controller(victim_identity := _identity("globex", "dev-9")) is not None
        assert server.registry.controller(victim_identity).state.mode == 0


def _identity(tenant: str, device: str) -> Any:
    from auth.identity import Identity

    return Identity(tenant, device)


@pytest.mark.parametrize(("role", "allowed"), [("viewer", 8), ("operator", 28)])
async def test_each_role_may_call_only_its_methods(
    server: AudioServer, connect: Connect, admin: Admin, role: str, allowed: int
) -> None:
    async with connect(server, "acme", "dev-1"), admin(server, "acme", role=role) as stub:
        before = auth_failures()
        codes = {m: await code_of(c) for m, c in every_call(stub, "", "dev-1").items()}
    denied = {m for m, c in codes.items() if c == grpc.StatusCode.PERMISSION_DENIED}
    needed = {m.rsplit("/", 1)[-1]: r for m, r in METHOD_ROLES.items()}
    assert denied == {m for m, r in needed.items() if r.label != role and r > _role(role)}
    assert len(codes) - len(denied) == allowed
    assert counted_since(before) == {"role_insufficient": len(denied)}
    refusals, _ = await server.audit.list("acme", 100, where=None)  # type: ignore[union-attr]
    audited = {e.action for e in refusals if e.result == "PERMISSION_DENIED"}
    assert audited == denied


def _role(label: str) -> Any:
    from auth.operators import Role

    return Role.parse(label)


async def test_devices_and_operators_cannot_cross_services(
    server: AudioServer, pki: EphemeralPki, admin: Admin
) -> None:
    before = auth_failures()
    async with admin(server, tls=pki.device_tls("acme", "dev-1")) as as_device:
        error = await refused(as_device.ListDevices(apb.ListDevicesRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert counted_since(before) == {"cert_not_an_operator": 1}
    # the services are on different listeners: neither port even serves the other's methods
    tls = pki.operator_tls("acme", "ops", "admin")
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.admin_port}", _credentials(tls)) as channel:
        call = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(pb.AudioStreamRequest(start=True))
        assert await code_of(call.read()) == grpc.StatusCode.UNIMPLEMENTED
    async with admin(server, tls=tls) as wrong_port:
        pass
    async with FleetClient(f"127.0.0.1:{server.port}", tls) as client:
        assert (
            await code_of(client.stub.ListDevices(apb.ListDevicesRequest())) == grpc.StatusCode.UNIMPLEMENTED
        )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_session(server.port, tls)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    del wrong_port


def _credentials(tls: TlsMaterial) -> grpc.ChannelCredentials:
    from auth.tls import channel_credentials

    return channel_credentials(tls)


async def test_commands_act_like_the_devices_own_buttons(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        result = await ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=2))
        assert result.node == server.fleet.node_id and not result.stored_only
        await wait_for(lambda: mode_of(device.view.leds) == 2)
        played = await ops.Play(ref("dev-1"))
        assert played.device.playing.mode == 2 and played.device.playing.length_s > 1
        await wait_for(lambda: bool(sink.sounds) and len(sink.sounds[0].chunks) > 10)
        await ops.Stop(ref("dev-1"))
        await wait_for(lambda: sink.sounds[0].ended)
        got = await ops.GetDevice(ref("dev-1"))
        assert not got.HasField("playing") and got.mode == 2
        await server.fleet.idle()
        history = [e.what for e in (await ops.ListDeviceEvents(ref("dev-1"))).events]
        assert history[:4] == ["sound ended", "playing mode 2", "mode 2", "connected"]
        await ops.Disconnect(ref("dev-1"))
        await wait_for(lambda: "status" in device.ends)
        assert device.ends["status"].code == grpc.StatusCode.UNAVAILABLE
        assert "operator" in device.ends["status"].details
    await wait_for(lambda: server.registry.controller(_identity("acme", "dev-1")) is None)
    await server.fleet.idle()
    async with admin(server, role="operator") as ops:
        offline = await refused(ops.Play(ref("dev-1")))
        assert offline.code() == grpc.StatusCode.FAILED_PRECONDITION and offline.details() == "device offline"
        stored = await ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=4))
        assert stored.stored_only and stored.device.mode == 4 and not stored.device.online
        assert stored.device.last_disconnect_reason == "UNAVAILABLE"
        bad = await refused(ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=99)))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with connect(server, "acme", "dev-1") as device:
        await wait_for(lambda: mode_of(device.view.leds) == 4)  # the stored mode, on its next connection


async def test_revoke_ends_the_streams_at_once_survives_a_restart_and_unrevoke_lets_it_back(
    server_factory: ServerFactory, connect: Connect, admin: Admin, pki: EphemeralPki, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite3"
    server = await server_factory(state_backend="sqlite", state_path=state)
    async with connect(server, "acme", "dev-1") as device, admin(server) as ops:
        started = time.monotonic()
        revoked = await ops.RevokeDevice(ref("dev-1"))
        assert revoked.revoked
        await wait_for(lambda: len(device.ends) == 3, timeout=2)
        assert time.monotonic() - started < 1.0
        assert {end.code for end in device.ends.values()} == {grpc.StatusCode.PERMISSION_DENIED}
    await server.stop(grace_s=1.0)
    again = await server_factory(state_backend="sqlite", state_path=state)
    before = auth_failures()
    error = await refused(create_session(again.port, pki.device_tls("acme", "dev-1")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert counted_since(before) == {"device_revoked": 1}
    async with admin(again) as ops:
        assert (await ops.GetDevice(ref("dev-1"))).revoked
        assert not (await ops.UnrevokeDevice(ref("dev-1"))).revoked
    async with connect(again, "acme", "dev-1") as device:
        await device.press(MODE)
        assert not device.ends


async def test_audit_records_changes_and_refusals_scoped_by_tenant(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "dev-1"), connect(server, "globex", "dev-9"):
        async with admin(server, "acme", role="operator", name="alice") as alice:
            await alice.Play(ref("dev-1"))
            await alice.Stop(ref("dev-1"))
            await code_of(alice.RevokeDevice(ref("dev-1")))  # refused: needs admin
            await code_of(alice.GetDevice(ref("dev-9", "globex")))  # refused: not found
            await alice.GetDevice(ref("dev-1"))  # a read that succeeds: not audited
            listing = await alice.ListAuditEvents(apb.ListAuditEventsRequest())
            actions = [(e.action, e.result) for e in listing.events]
            assert actions == [
                ("GetDevice", "NOT_FOUND"),
                ("RevokeDevice", "PERMISSION_DENIED"),
                ("Stop", "OK"),
                ("Play", "OK"),
            ]  # newest first
            play = listing.events[-1]
            assert play.operator.endswith("/tenant/acme/operator/alice") and play.role == "operator"
            assert play.target == "dev-1" and play.tenant == "acme" and len(play.request_id) == 32
            only_refused = await alice.ListAuditEvents(apb.ListAuditEventsRequest(refused_only=True))
            assert len(only_refused.events) == 2
            paged = await alice.ListAuditEvents(apb.ListAuditEventsRequest(page_size=3))
            rest = await alice.ListAuditEvents(apb.ListAuditEventsRequest(page_token=paged.next_page_token))
            assert [e.id for e in [*paged.events, *rest.events]] == [e.id for e in listing.events]
            bad = await refused(alice.ListAuditEvents(apb.ListAuditEventsRequest(page_token="x;DROP")))
            assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        async with admin(server, "globex", role="admin", name="bob") as bob:
            await bob.Play(ref("dev-9"))
            theirs = await bob.ListAuditEvents(apb.ListAuditEventsRequest())
            assert [(e.tenant, e.action) for e in theirs.events] == [("globex", "Play")]
        async with admin(server, None, role="viewer", name="root") as root:
            everything = await root.ListAuditEvents(apb.ListAuditEventsRequest())
            assert {e.tenant for e in everything.events} == {"acme", "globex"}
            assert json.loads(everything.events[0].parameters) == {}


async def test_an_uploaded_sound_plays_for_its_tenant_only(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    upload = wav_bytes(1.5, freq=523.25)
    acme_sink, globex_sink = RecordingSink(), RecordingSink()
    async with (
        connect(server, "acme", "dev-1", sink=acme_sink),
        connect(server, "globex", "dev-9", sink=globex_sink),
        admin(server, "acme", role="operator") as ops,
        admin(server, "globex", role="operator", name="g") as gops,
    ):
        sound = await ops.UploadSound(_upload_chunks(0, upload))
        assert sound.source == "uploaded" and abs(sound.length_s - 1.5) < 0.01 and len(sound.sha256) == 64
        listed = await ops.ListSounds(apb.ListSoundsRequest())
        assert [s.source for s in listed.sounds][:2] == ["uploaded", "builtin"]
        await ops.Play(ref("dev-1"))
        await gops.Play(ref("dev-9", "globex"))
        await wait_for(lambda: bool(acme_sink.sounds) and acme_sink.sounds[0].ended, timeout=5)
        await wait_for(lambda: bool(globex_sink.sounds) and globex_sink.sounds[0].ended, timeout=5)
        expected, rate = soundfile.read(io.BytesIO(upload), dtype="float32")
        import soxr

        reference = (soxr.resample(expected, rate, SAMPLE_RATE) * 32767).astype(np.int16)
        assert heard_clip(acme_sink.sounds[0].pcm, reference)
        builtin = server.sounds.library.clip_for(0).pcm  # type: ignore[union-attr]
        assert heard_clip(globex_sink.sounds[0].pcm, builtin)  # globex: still the built-in
        # a bad file is refused with its reason, and nothing changes
        for bad, reason in ((b"not audio at all", "not a readable audio file"), (b"", "empty")):
            error = await refused(ops.UploadSound(_upload_chunks(0, bad)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in error.details()
        too_long = await refused(ops.UploadSound(_upload_chunks(0, wav_bytes(601, rate=8000))))
        assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 600 s" in too_long.details()
        assert (await ops.ListSounds(apb.ListSoundsRequest())).sounds[0].sha256 == sound.sha256
        reset = await ops.ResetSound(apb.ResetSoundRequest(mode=0))
        assert reset.source == "builtin"


async def test_watch_sees_a_button_press_within_a_second(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with admin(server, "acme", role="viewer") as viewer:
        watch = viewer.WatchDevices(apb.WatchDevicesRequest())
        assert (await watch.read()).kind == apb.DeviceUpdate.SNAPSHOT_END  # nothing seen yet
        async with connect(server, "acme", "dev-1") as device, connect(server, "globex", "dev-9"):
            update = await asyncio.wait_for(watch.read(), 2)
            assert update.change == "connected" and update.device.online
            pressed = time.monotonic()
            await device.press(MODE)
            while (update := await asyncio.wait_for(watch.read(), 2)).change != "mode":
                assert update.device.tenant == "acme"
            assert time.monotonic() - pressed < 1.0
            assert update.device.mode == 1 and update.device.leds[2].label == "white"
        watch.cancel()


async def test_every_call_gets_a_request_id_that_its_audit_event_carries(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "dev-1"), admin(server, "acme", role="viewer") as viewer:
        call = viewer.Play(ref("dev-1"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        refused_id = dict(info.value.trailing_metadata() or ())["x-request-id"]
        ok = viewer.GetDevice(ref("dev-1"))
        await ok
        assert len(dict(await ok.trailing_metadata())["x-request-id"]) == 32
    events, _ = await server.audit.list("acme", 10)  # type: ignore[union-attr]
    assert [(e.action, e.request_id) for e in events] == [("Play", refused_id)]
