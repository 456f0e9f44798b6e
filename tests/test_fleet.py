"""Two replicas on one real Redis, and one process alone: the bus and presence between nodes.

A device reconnecting to replica B ends its old streams on A within a second; a revocation seen
by one replica ends the device's streams on the other within a second; a command issued on B
reaches the device on A through its state machine; a watcher on B sees a Mode pressed on A.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from auth.identity import Identity
from auth.revocation import revoke
from device.client import DeviceClient
from server.app import AudioServer
from server.devices.commands import Command
from server.fleet.device_view import DeviceView
from server.fleet.node import DeviceOffline
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, wait_for
from tests.redis_server import RedisServer

DEVICE = Identity("acme", "fleet-1")


@pytest.fixture
async def replicas(
    redis_server: RedisServer, server_factory: ServerFactory, tmp_path: Path
) -> tuple[AudioServer, AudioServer]:
    shared = {"state_backend": "redis", "redis_url": redis_server.url, "store_retry_s": 0.05}
    a = await server_factory(
        node_id="node-a", crl_path=tmp_path / "crl-a.pem", reload_interval_s=0.05, **shared
    )
    b = await server_factory(
        node_id="node-b", crl_path=tmp_path / "crl-b.pem", reload_interval_s=60, **shared
    )
    return a, b


async def held_by(node: AudioServer, device: DeviceClient) -> None:
    """The device's streams are up on ``node`` and its presence says so."""
    await wait_for(lambda: device.status_requests >= 1)
    await node.fleet.idle()


async def test_reconnecting_to_another_replica_ends_the_old_streams_within_a_second(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, b = replicas
    async with connect(a, "acme", "fleet-1") as old:
        await held_by(a, old)
        assert await b.fleet.presence.holder(DEVICE) == "node-a"
        started = time.monotonic()
        async with connect(b, "acme", "fleet-1") as new:
            await wait_for(lambda: len(old.ends) >= 3, timeout=5)
            took = time.monotonic() - started
            assert took < 1.0, took
            assert {end.code for end in old.ends.values()} == {grpc.StatusCode.ABORTED}
            assert "superseded" in old.ends["status"].details
            await new.press(MODE)
            assert not new.ends
            await wait_for(lambda: a.registry.controller(DEVICE) is None)
            await b.fleet.idle()
            assert await a.fleet.presence.holder(DEVICE) == "node-b"


async def test_a_revocation_seen_by_one_replica_ends_streams_on_the_other(
    replicas: tuple[AudioServer, AudioServer], connect: Connect, pki: EphemeralPki, tmp_path: Path
) -> None:
    _, b = replicas  # B reloads its CRL only every 60 s: the bus (from A) is what tells it
    async with connect(b, "acme", "stolen") as stolen, connect(b, "acme", "fine") as fine:
        await wait_for(lambda: stolen.status_requests >= 1 and fine.status_requests >= 1)
        started = time.monotonic()
        revoke(pki.ca, tmp_path / "crl-a.pem", [pki.device("acme", "stolen").cert.serial_number])
        await wait_for(lambda: len(stolen.ends) >= 3, timeout=5)
        assert time.monotonic() - started < 1.0 + 0.05  # within a second of A's reload
        assert {end.code for end in stolen.ends.values()} == {grpc.StatusCode.PERMISSION_DENIED}
        from tests.test_security import create_session

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create_session(b.port, pki.device_tls("acme", "stolen"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # and refused there from now on
        await fine.press(MODE)
        assert not fine.ends


async def test_a_command_on_one_replica_reaches_the_device_on_another(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, b = replicas
    async with connect(a, "acme", "fleet-1") as device:
        await held_by(a, device)
        assert await b.fleet.command(DEVICE, Command.press(MODE)) == "node-a"
        await wait_for(lambda: mode_of(device.view.leds) == 1, timeout=2)  # LEDs as for a real press
    await wait_for(lambda: a.registry.controller(DEVICE) is None)  # the device left
    await a.fleet.idle()  # its presence released
    with pytest.raises(DeviceOffline):
        await b.fleet.command(DEVICE, Command.press(MODE))


async def test_a_watcher_on_one_replica_sees_changes_on_another(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, b = replicas
    seen: list[tuple[DeviceView, str, float]] = []

    async def watcher(view: DeviceView, change: str) -> None:
        seen.append((view, change, time.monotonic()))

    b.fleet.watch(watcher)
    async with connect(a, "acme", "fleet-1") as device:
        await wait_for(lambda: any(v.online and c == "connected" for v, c, _ in seen))
        pressed = time.monotonic()
        await device.press(MODE)
        await wait_for(lambda: any(v.record.mode == 1 and c == "mode" for v, c, _ in seen), timeout=2)
        at = next(t for v, c, t in seen if v.record.mode == 1 and c == "mode")
        assert at - pressed < 1.0
        assert all(v.node == "node-a" for v, _, _ in seen if v.online)
    await wait_for(lambda: any(not v.online and c == "disconnected" for v, c, _ in seen))
    assert {(v.identity.tenant, v.identity.device_id) for v, _, _ in seen} == {("acme", "fleet-1")}


async def test_one_process_alone_has_the_same_fleet_operations(server: AudioServer, connect: Connect) -> None:
    seen: list[DeviceView] = []

    async def watcher(view: DeviceView, change: str) -> None:
        seen.append(view)

    server.fleet.watch(watcher)
    async with connect(server, "acme", "solo") as device:
        await wait_for(lambda: device.status_requests >= 1)
        assert (
            await server.fleet.command(Identity("acme", "solo"), Command.press(MODE)) == server.fleet.node_id
        )
        await wait_for(lambda: mode_of(device.view.leds) == 1)
        await wait_for(lambda: any(v.record.mode == 1 for v in seen))
    await wait_for(lambda: server.registry.controller(Identity("acme", "solo")) is None)
    await server.fleet.idle()
    with pytest.raises(DeviceOffline):
        await server.fleet.command(Identity("acme", "solo"), Command.press(MODE))


async def test_after_a_bus_outage_a_device_revoked_meanwhile_is_ended(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, _ = replicas
    async with connect(a, "acme", "fleet-1") as device:
        await held_by(a, device)
        await a.store.update_now(DEVICE, {"revoked": True})  # written, but its broadcast "lost"
        assert not device.ends
        a.fleet.resync()  # what the bus does when it is back
        await wait_for(lambda: len(device.ends) == 3, timeout=2)
        assert {end.code for end in device.ends.values()} == {grpc.StatusCode.PERMISSION_DENIED}


async def test_after_a_bus_outage_a_session_superseded_elsewhere_meanwhile_is_ended(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, b = replicas
    async with connect(a, "acme", "fleet-1") as device:
        await held_by(a, device)
        await wait_for(lambda: _open_streams(a) == {"status", "event", "audio"})  # none opens after the claim
        await b.store.claim_now(DEVICE, "newer-session")  # claimed on B; the SUPERSEDED message "lost"
        assert not device.ends
        a.fleet.resync()  # what the bus does when it is back
        await wait_for(lambda: len(device.ends) == 3, timeout=2)
        assert {end.code for end in device.ends.values()} == {grpc.StatusCode.ABORTED}
        assert "superseded" in device.ends["status"].details


def _open_streams(app: AudioServer) -> set[str]:
    controller = app.registry.controller(DEVICE)
    session = controller.session if controller is not None else None
    return {kind for kind, count in session.streams.items() if count} if session is not None else set()
