"""The operator API across replicas sharing one real Redis (issue 11): commands, watch, revocation,
sounds, audit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from comms.gen import admin_pb2 as apb
from device.audio_sink import RecordingSink
from server.app import AudioServer
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
from tests.redis_server import RedisServer
from tests.test_admin_api import _upload_chunks, ref, refused, wav_bytes
from tests.test_fleet import held_by
from tests.test_security import call_each_method, create_session


def shared(redis_server: RedisServer, node: str) -> dict[str, object]:
    return {"state_backend": "redis", "redis_url": redis_server.url, "store_retry_s": 0.05, "node_id": node}


async def replica_pair(
    server_factory: ServerFactory, redis_server: RedisServer
) -> tuple[AudioServer, AudioServer]:
    """Two replicas, ``node-a`` and ``node-b``, sharing ``redis_server``."""
    return (
        await server_factory(**shared(redis_server, "node-a")),
        await server_factory(**shared(redis_server, "node-b")),
    )


async def test_a_command_on_b_plays_on_the_device_connected_to_a(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    sink = RecordingSink()
    async with connect(a, "acme", "dev-1", sink=sink) as device, admin(b, role="operator") as ops:
        await held_by(a, device)
        listed = await ops.ListDevices(apb.ListDevicesRequest(online=apb.ListDevicesRequest.ONLINE))
        assert [(d.device_id, d.node) for d in listed.devices] == [("dev-1", "node-a")]
        moved = await ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=3))
        assert moved.node == "node-a"
        await wait_for(lambda: mode_of(device.view.leds) == 3, timeout=2)  # LEDs as for a real press
        played = await ops.Play(ref("dev-1"))
        assert played.node == "node-a"
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=5)
        assert heard_clip(sink.sounds[0].pcm, a.sounds.library.clip_for(3).pcm)  # type: ignore[union-attr]
        got = await ops.GetDevice(ref("dev-1"))
        assert got.online and got.node == "node-a" and got.mode == 3


async def test_watch_on_b_sees_a_mode_press_on_a_within_a_second(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    async with admin(b, role="viewer") as viewer:
        watch = viewer.WatchDevices(apb.WatchDevicesRequest())
        assert (await watch.read()).kind == apb.DeviceUpdate.SNAPSHOT_END
        async with connect(a, "acme", "dev-1") as device:
            while (update := await asyncio.wait_for(watch.read(), 2)).change != "connected":
                pass
            assert update.device.node == "node-a"
            pressed = time.monotonic()
            await device.press(MODE)
            while (update := await asyncio.wait_for(watch.read(), 2)).change != "mode":
                pass
            assert time.monotonic() - pressed < 1.0 and update.device.mode == 1
        while (update := await asyncio.wait_for(watch.read(), 2)).change != "disconnected":
            pass
        assert not update.device.online and update.device.last_disconnect_reason == "CANCELLED"
        watch.cancel()


async def test_revoke_on_b_ends_the_streams_on_a_within_a_second_and_outlives_both(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    pki: EphemeralPki,
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    async with connect(a, "acme", "dev-1") as device, connect(a, "acme", "dev-2") as bystander:
        await held_by(a, device)
        async with admin(b) as ops:
            started = time.monotonic()
            await ops.RevokeDevice(ref("dev-1"))
            await wait_for(lambda: len(device.ends) == 3, timeout=2)
            assert time.monotonic() - started < 1.0
        assert {end.code for end in device.ends.values()} == {grpc.StatusCode.PERMISSION_DENIED}
        await bystander.press(MODE)
        assert not bystander.ends
    for app in (a, b):
        await app.stop(grace_s=0.5)
    fresh = await server_factory(**shared(redis_server, "node-c"))
    error = await refused(create_session(fresh.port, pki.device_tls("acme", "dev-1")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    async with admin(fresh) as ops:
        await ops.UnrevokeDevice(ref("dev-1"))
        audit = await ops.ListAuditEvents(apb.ListAuditEventsRequest(device_id="dev-1"))
        assert [e.action for e in audit.events] == ["UnrevokeDevice", "RevokeDevice"]
    async with connect(fresh, "acme", "dev-1") as device:
        assert (await device.press(MODE)).ack


async def test_a_sound_uploaded_on_b_plays_on_a_from_the_next_play(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin, tmp_path: Path
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    upload = wav_bytes(1.0, freq=660.0, rate=SAMPLE_RATE_44K)
    sink = RecordingSink()
    async with connect(a, "acme", "dev-1", sink=sink) as device, admin(b, role="operator") as ops:
        await held_by(a, device)
        await ops.UploadSound(_upload_chunks(0, upload))
        await ops.Play(ref("dev-1"))
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=5)
        uploaded = await a.sounds.clip("acme", 0)  # type: ignore[union-attr]
        assert uploaded.source == "uploaded"
        assert heard_clip(sink.sounds[0].pcm, uploaded.pcm)


SAMPLE_RATE_44K = 44_100


async def test_a_token_obtained_before_the_revocation_is_refused_on_every_replica(
    redis_server: RedisServer, server_factory: ServerFactory, admin: Admin, pki: EphemeralPki
) -> None:
    """Issue 23: the deny-list is checked on every call, not only at CreateSession: a token the
    device already holds opens no stream and refreshes no session, on the revoking replica or another."""
    a, b = await replica_pair(server_factory, redis_server)
    tls = pki.device_tls("acme", "dev-1")
    token = (await create_session(a.port, tls)).token
    assert set((await call_each_method(b.port, tls, token)).values()) == {grpc.StatusCode.OK}  # valid before
    async with admin(a) as ops:
        await ops.RevokeDevice(ref("dev-1"))
    for app in (a, b):
        before = auth_failures()
        codes = await call_each_method(app.port, tls, token)
        assert codes == dict.fromkeys(("status", "event", "audio"), grpc.StatusCode.PERMISSION_DENIED)
        error = await refused(create_session(app.port, tls, token))  # the refresh
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert counted_since(before) == {"device_revoked": 4}
    async with admin(b) as ops:
        await ops.UnrevokeDevice(ref("dev-1"))
    fresh = await create_session(a.port, tls)
    assert set((await call_each_method(a.port, tls, fresh.token)).values()) == {grpc.StatusCode.OK}
