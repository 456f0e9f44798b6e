"""Operator API behaviours that a one-line slip could break silently (issue 24): a platform
operator's watch and audit trail, a command the holder could not apply, the upload size limit,
and refusals during a store outage."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile

from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from comms.gen import admin_pb2 as apb
from server.app import AudioServer
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import _upload_chunks, ref, refused
from tests.test_admin_replicas import replica_pair
from tests.test_fleet import held_by

DEFAULT_SOUND_MAX_BYTES = 20 * 1024 * 1024  # AUDIO_SERVER_SOUND_MAX_BYTES default (docs/reference)
WAV_HEADER = 80  # libsndfile's WAV header for 64-bit float samples
WATCH_S = 2.0  # a change reaches a watcher within a second; twice that before the test gives up


async def _changes_until(
    watch: grpc.aio.UnaryStreamCall, seen: list[apb.DeviceUpdate], tenant: str, device: str
) -> None:
    """Read ``watch`` into ``seen`` until ``tenant``/``device`` reports a mode change."""
    while True:
        update = await asyncio.wait_for(watch.read(), WATCH_S)
        assert update is not grpc.aio.EOF
        seen.append(update)
        if update.change == "mode" and (update.device.tenant, update.device.device_id) == (tenant, device):
            return


async def test_a_platform_operator_watching_every_tenant_sees_each_tenants_presses(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with (
        admin(server, None, role="viewer", name="root") as root,
        admin(server, None, role="viewer", name="gina") as gina,
    ):
        everyone = root.WatchDevices(apb.WatchDevicesRequest())
        globex_only = gina.WatchDevices(apb.WatchDevicesRequest(tenant="globex"))
        for watch in (everyone, globex_only):
            assert (await watch.read()).kind == apb.DeviceUpdate.SNAPSHOT_END
        async with connect(server, "acme", "dev-1") as acme, connect(server, "globex", "dev-9") as globex:
            seen_by_root: list[apb.DeviceUpdate] = []
            await acme.press(MODE)
            await _changes_until(everyone, seen_by_root, "acme", "dev-1")
            await globex.press(MODE)  # published after acme's: a leaky filter would show acme's first
            await _changes_until(everyone, seen_by_root, "globex", "dev-9")
            seen_by_gina: list[apb.DeviceUpdate] = []
            await _changes_until(globex_only, seen_by_gina, "globex", "dev-9")
        assert {u.device.tenant for u in seen_by_root} == {"acme", "globex"}
        assert {u.device.tenant for u in seen_by_gina} == {"globex"}
        everyone.cancel()
        globex_only.cancel()


async def test_a_platform_operators_device_actions_are_in_the_tenants_audit_log(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "dev-1") as device, admin(server, None, name="root") as root:
        await wait_for(lambda: device.status_requests >= 1)
        await root.SetMode(apb.SetModeRequest(device=ref("dev-1", "acme"), mode=2))
        await root.Play(ref("dev-1", "acme"))
        await root.RevokeDevice(ref("dev-1", "acme"))
    async with admin(server, "acme", role="admin", name="ann") as acme_admin:
        listing = await acme_admin.ListAuditEvents(apb.ListAuditEventsRequest())
    rows = [(e.action, e.target, e.result, e.tenant, e.role) for e in listing.events]
    assert rows == [
        ("RevokeDevice", "dev-1", "OK", "acme", "admin"),
        ("Play", "dev-1", "OK", "acme", "admin"),
        ("SetMode", "dev-1", "OK", "acme", "admin"),
    ]
    assert {e.operator for e in listing.events} == {f"spiffe://{DEFAULT_TRUST_DOMAIN}/platform/operator/root"}


async def test_a_device_gone_between_the_lookup_and_the_delivery_is_offline_never_ok(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replica B finds the device on A, then the device leaves A before B's command gets there:
    A answers "not applied", and the operator hears "device offline"."""
    a, b = await replica_pair(server_factory, redis_server)
    target = Identity("acme", "dev-1")
    async with connect(a, "acme", "dev-1") as device, admin(b, role="operator") as ops:
        await held_by(a, device)
        looked_up = b.fleet.presence.holder
        gone: list[str | None] = []

        async def holder_then_gone(identity: Identity) -> str | None:
            found = await looked_up(identity)
            if identity == target and not gone:
                await device.close()  # the device leaves A right after B's lookup
                await wait_for(lambda: a.registry.controller(target) is None)
                gone.append(found)
            return found

        monkeypatch.setattr(b.fleet.presence, "holder", holder_then_gone)
        error = await refused(ops.Play(ref("dev-1")))
        assert gone == ["node-a"]  # the race happened: B looked the device up on A, then it left
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error.details() == "device offline"
    events, _ = await b.audit.list("acme", 10)  # type: ignore[union-attr]
    assert [(e.action, e.result) for e in events] == [("Play", "FAILED_PRECONDITION")]


def wav_of_size(size: int, freq: float = 330.0) -> bytes:
    """A valid 48 kHz mono WAV (64-bit float samples: few seconds per byte) of exactly ``size`` bytes."""
    frames, odd = divmod(size - WAV_HEADER, 8)
    assert odd == 0, size
    t = np.arange(frames) / 48_000
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), 48_000, format="WAV", subtype="DOUBLE")
    data = buffer.getvalue()
    assert len(data) == size
    return data


async def test_an_upload_at_the_size_limit_is_accepted_and_one_byte_more_refused(
    server: AudioServer, admin: Admin
) -> None:
    limit = server.sounds.max_bytes  # type: ignore[union-attr]
    assert limit == DEFAULT_SOUND_MAX_BYTES
    at_limit = wav_of_size(limit)
    async with admin(server, role="operator") as ops:
        over = await refused(ops.UploadSound(_upload_chunks(2, at_limit + b"\0")))
        assert over.code() == grpc.StatusCode.INVALID_ARGUMENT and str(limit) in over.details()
        assert (await ops.ListSounds(apb.ListSoundsRequest())).sounds[2].source == "builtin"  # unchanged
        sound = await ops.UploadSound(_upload_chunks(2, at_limit))
        assert sound.source == "uploaded" and sound.sha256 == hashlib.sha256(at_limit).hexdigest()
        assert (await ops.ListSounds(apb.ListSoundsRequest())).sounds[2].sha256 == sound.sha256


async def test_a_call_refused_because_the_store_is_down_is_audited_in_the_log_and_later_in_the_store(
    server_factory: ServerFactory, admin: Admin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.operator.audit")
    redis = RedisServer(tmp_path / "redis", durable=True).start()
    try:
        app = await server_factory(state_backend="redis", redis_url=redis.url, store_retry_s=0.05)
        async with admin(app, "acme", role="operator", name="olga") as ops:
            redis.stop(kill=True)
            down = await refused(ops.Play(ref("dev-1")))
            assert down.code() == grpc.StatusCode.UNAVAILABLE
            (line,) = [r for r in caplog.records if r.getMessage() == "audit" and r.action == "Play"]
            assert (line.result, line.tenant, line.target) == ("UNAVAILABLE", "acme", "dev-1")
            assert line.operator.endswith("/tenant/acme/operator/olga")
            assert app.audit.pending == 2  # type: ignore[union-attr]  # its tenant's log and the platform's
            redis.start()
            await wait_for(lambda: app.audit.pending == 0, timeout=10)  # type: ignore[union-attr]
            listing = await ops.ListAuditEvents(apb.ListAuditEventsRequest())
        assert [(e.action, e.result, e.target) for e in listing.events] == [("Play", "UNAVAILABLE", "dev-1")]
        assert listing.events[0].request_id == line.request_id
    finally:
        redis.stop()
