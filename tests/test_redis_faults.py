"""Redis killed (SIGKILL) and restarted under live devices: streams go on, new sessions wait, nothing lost."""

from __future__ import annotations

import contextlib
from pathlib import Path

import grpc
import pytest

from auth.identity import Identity
from server.fleet.device_view import DeviceView
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_ops import NOT_SERVING, SERVING, health_status
from tests.test_security import create_session

DEVICES = 5


async def test_redis_killed_and_restarted_under_live_devices(
    server_factory: ServerFactory,
    connect: Connect,
    pki: EphemeralPki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = RedisServer(tmp_path / "redis", durable=True).start()
    try:
        app = await server_factory(state_backend="redis", redis_url=redis.url, store_retry_s=0.05)
        assert app.health is not None
        async with contextlib.AsyncExitStack() as stack:
            devices = [
                await stack.enter_async_context(connect(app, "acme", f"live-{n}")) for n in range(DEVICES)
            ]
            for device in devices:
                await device.press(MODE)
            await wait_for(lambda: app.store.pending == 0 and all(mode_of(d.view.leds) == 1 for d in devices))
            seen: dict[str, int] = {}

            async def watcher(view: DeviceView, change: str) -> None:
                if change != "telemetry":  # (a battery report would carry the mode too, by luck)
                    seen[view.identity.device_id] = view.record.mode

            app.fleet.watch(watcher)

            redis.stop(kill=True)
            for device in devices:
                assert (await device.press(MODE)).ack  # live devices keep working from memory
            await wait_for(lambda: all(mode_of(d.view.leds) == 2 for d in devices))
            await wait_for(lambda: not app.store.healthy)
            assert await health_status(app.health.port) == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await create_session(app.port, pki.device_tls("acme", "newcomer"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # no session nobody else could see

            redis.start()  # same port, its append-only file reloaded
            await wait_for(lambda: app.store.healthy and app.store.pending == 0, timeout=15)
            assert await health_status(app.health.port) == SERVING
            await create_session(app.port, pki.device_tls("acme", "newcomer"))  # accepted again
            assert not any(device.ends for device in devices)  # no stream was cut
            # the mode changes published while the bus was down were lost; the resync catches up
            await wait_for(lambda: seen == {f"live-{n}": 2 for n in range(DEVICES)}, timeout=5)
            for n in range(DEVICES):
                stored = await app.store.load(Identity("acme", f"live-{n}"))
                assert stored is not None and stored.mode == 2  # the presses made meanwhile landed
            assert not [r.getMessage() for r in caplog.records if r.exc_info]  # an outage, not a bug
    finally:
        redis.stop()


async def test_a_killed_nodes_devices_read_offline_within_the_lease(
    redis_server: RedisServer, pki: EphemeralPki, tmp_path: Path
) -> None:
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time

    import redis.asyncio as aioredis

    from device.audio_sink import RecordingSink
    from device.client import DeviceClient
    from server.fleet.presence import RedisPresence
    from tests.helpers import free_port

    port = free_port()
    log_file = (tmp_path / "node.log").open("w")
    node = subprocess.Popen(
        [sys.executable, "-m", "server", "--pki-dir", str(pki.root), "--bind", f"127.0.0.1:{port}",
         "--health-bind", "", "--metrics-bind", "", "--admin-bind", "", "--state-backend", "redis",
         "--redis-url", redis_server.url, "--node-id", "node-a", "--presence-lease-s", "2"],
        stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    client = DeviceClient(f"127.0.0.1:{port}", pki.device_tls("acme", "orphan"), RecordingSink())
    observer = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    presence = RedisPresence("observer", observer, lease_s=2)
    try:
        deadline = time.monotonic() + 20
        while True:  # the subprocess needs a moment to listen
            try:
                await client.connect()
                break
            except Exception:
                await client.close()
                assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()
                await asyncio.sleep(0.2)
                client = DeviceClient(f"127.0.0.1:{port}", pki.device_tls("acme", "orphan"), RecordingSink())
        identity = Identity("acme", "orphan")
        await wait_for(lambda: client.status_requests >= 1)
        holder: list[str | None] = [None]

        async def poll() -> None:
            holder[0] = await presence.holder(identity)

        while holder[0] != "node-a":
            await poll()
            await asyncio.sleep(0.05)
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        killed = time.monotonic()
        while holder[0] is not None:
            await poll()
            assert time.monotonic() - killed < 2 + 1.5, "presence outlived the lease"
            await asyncio.sleep(0.05)
        expired_after = time.monotonic() - killed
        print(f"\npresence of a SIGKILLed node's device expired after {expired_after:.1f} s (lease 2 s)")
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        await client.close()
        await observer.aclose()
        log_file.close()


async def test_right_after_an_outage_longer_than_the_lease_operators_reach_live_devices(
    server_factory: ServerFactory, connect: Connect, admin: Admin, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    from comms.gen import admin_pb2 as apb
    from server.fleet.presence import presence_key
    from tests.test_admin_api import ref
    from tests.test_fleet import held_by

    redis = RedisServer(tmp_path / "redis", durable=True).start()
    lease = {"presence_lease_s": 60.0}  # no scheduled refresh during the test: only the recovery's
    shared = {"state_backend": "redis", "redis_url": redis.url, "store_retry_s": 0.05, **lease}
    try:
        a = await server_factory(node_id="node-a", **shared)
        b = await server_factory(node_id="node-b", **shared)
        async with connect(a, "acme", "dev-1") as device, admin(b, role="operator") as ops:
            await held_by(a, device)
            observer = aioredis.Redis.from_url(redis.url, decode_responses=True)
            await observer.delete(presence_key(Identity("acme", "dev-1")))  # as if it expired in the outage
            await observer.aclose()
            redis.stop(kill=True)
            await wait_for(lambda: not a.fleet.bus.subscribed.is_set())  # type: ignore[attr-defined]
            redis.start()  # its append-only file reloaded: the lease is gone, as after a long outage
            await wait_for(lambda: a.fleet.bus.subscribed.is_set(), timeout=10)  # type: ignore[attr-defined]
            await a.fleet.idle()  # A's resync went out
            moved = await ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=2))
            assert not moved.stored_only and moved.node == "node-a"
            await wait_for(lambda: mode_of(device.view.leds) == 2, timeout=2)
            played = await ops.Play(ref("dev-1"))
            assert played.node == "node-a"
    finally:
        redis.stop()


async def test_every_operator_method_answers_unavailable_in_our_words_during_an_outage(
    server_factory: ServerFactory, connect: Connect, admin: Admin, tmp_path: Path, pki: EphemeralPki
) -> None:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from comms.gen import admin_pb2 as apb
    from server.errors import STORE_UNAVAILABLE_TEXT
    from server.operator.calls import LEAST_ROLE
    from tests.test_admin_api import _upload_chunks, ref, refused, talk_requests, wav_bytes

    redis = RedisServer(tmp_path / "redis").start()
    try:
        pki.issuing_ca()  # enrolment on: its code methods need the store too
        app = await server_factory(
            state_backend="redis",
            redis_url=redis.url,
            store_retry_s=0.05,
            console_bind="127.0.0.1:0",
            enroll_bind="127.0.0.1:0",
        )
        async with connect(app, "acme", "dev-1"):
            pass  # the device exists in the store
        async with admin(app) as ops:
            first_watch = ops.WatchDevices(apb.WatchDevicesRequest())

            async def watch() -> Any:
                return await ops.WatchDevices(apb.WatchDevicesRequest()).read()

            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "ListDevices": lambda: ops.ListDevices(apb.ListDevicesRequest()),
                "GetDevice": lambda: ops.GetDevice(ref("dev-1")),
                "WatchDevices": watch,
                "ListDeviceEvents": lambda: ops.ListDeviceEvents(ref("dev-1")),
                "ListAuditEvents": lambda: ops.ListAuditEvents(apb.ListAuditEventsRequest()),
                "ListSounds": lambda: ops.ListSounds(apb.ListSoundsRequest()),
                "CreateConsoleLogin": lambda: ops.CreateConsoleLogin(apb.CreateConsoleLoginRequest()),
                "SetMode": lambda: ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=1)),
                "Play": lambda: ops.Play(ref("dev-1")),
                "Stop": lambda: ops.Stop(ref("dev-1")),
                "Disconnect": lambda: ops.Disconnect(ref("dev-1")),
                "UploadSound": lambda: ops.UploadSound(_upload_chunks(0, wav_bytes(0.5))),
                "ResetSound": lambda: ops.ResetSound(apb.ResetSoundRequest(mode=0)),
                "RevokeDevice": lambda: ops.RevokeDevice(ref("dev-1")),
                "UnrevokeDevice": lambda: ops.UnrevokeDevice(ref("dev-1")),
                "CreateEnrollments": lambda: ops.CreateEnrollments(
                    apb.CreateEnrollmentsRequest(device_id="dev-2")
                ),
                "ListEnrollments": lambda: ops.ListEnrollments(apb.ListEnrollmentsRequest()),
                "CancelEnrollment": lambda: ops.CancelEnrollment(
                    apb.CancelEnrollmentRequest(id="0123456789abcdef")
                ),
                "GetClaimCode": lambda: ops.GetClaimCode(apb.ClaimCodeRequest()),
                "SetClaimCode": lambda: ops.SetClaimCode(apb.ClaimCodeRequest()),
                "DisableClaimCode": lambda: ops.DisableClaimCode(apb.ClaimCodeRequest()),
                "ListPendingEnrollments": lambda: ops.ListPendingEnrollments(apb.ClaimCodeRequest()),
                "ApproveEnrollment": lambda: ops.ApproveEnrollment(
                    apb.DecideEnrollmentRequest(id="0123456789abcdef")
                ),
                "DenyEnrollment": lambda: ops.DenyEnrollment(
                    apb.DecideEnrollmentRequest(id="0123456789abcdef")
                ),
                "SetLabels": lambda: ops.SetLabels(
                    apb.SetLabelsRequest(device=ref("dev-1"), set=[apb.Label(key="zone", value="a")])
                ),
                "Announce": lambda: ops.Announce(apb.AnnounceRequest(selector="all", mode=0)),
                "CreateSchedule": lambda: ops.CreateSchedule(
                    apb.CreateScheduleRequest(selector="all", mode=0, cron="0 9 * * *")
                ),
                "ListSchedules": lambda: ops.ListSchedules(apb.ListSchedulesRequest()),
                **{
                    name: (lambda n=name: getattr(ops, n)(apb.ScheduleRef(id="0123456789ab")))
                    for name in ("GetSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule")
                },
                "Talk": lambda: ops.Talk(talk_requests(apb.TalkStart(selector="all"))),
            }
            assert set(calls) == set(LEAST_ROLE)  # a new method must be added here
            while (await first_watch.read()).kind != apb.DeviceUpdate.SNAPSHOT_END:  # all works before
                pass
            first_watch.cancel()
            redis.stop(kill=True)
            answers = {}
            for name, call in calls.items():
                error = await refused(call())
                answers[name] = (error.code(), error.details())
            assert answers == {
                name: (grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT) for name in calls
            }  # our words: no address, no exception text
    finally:
        redis.stop()
