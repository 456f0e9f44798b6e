"""The shared store loses its data (Redis restarted without persistence, FLUSHALL): two replicas
notice, say so, keep a revoked device out and put back what they hold in memory."""

from __future__ import annotations

import logging

import grpc
import pytest
import redis.asyncio as aioredis

from auth.identity import Identity
from comms.gen import admin_pb2 as apb
from server.app import AudioServer
from server.runtime.store_reset import GENERATION_KEY, RESET_ACTION
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import ref, refused
from tests.test_admin_replicas import replica_pair, shared
from tests.test_fleet import held_by
from tests.test_security import create_session

BAD = Identity("acme", "dev-bad")
LIVE = Identity("acme", "dev-live")
RESTORED_S = 20.0  # Redis back, the bus resubscribed (1 s retries), the check run, the restore done


def _resets(node: AudioServer) -> int:
    return node.generation.resets if node.generation is not None else 0


async def _revoked_and_refused_everywhere(
    nodes: tuple[AudioServer, AudioServer], connect: Connect, admin: Admin, pki: EphemeralPki
) -> None:
    a, b = nodes
    async with connect(a, "acme", "dev-bad") as bad:
        await held_by(a, bad)
        async with admin(b) as ops:
            await ops.RevokeDevice(ref("dev-bad"))
        await wait_for(lambda: len(bad.ends) == 3, timeout=2)
    await wait_for(lambda: all(n.generation is not None and BAD in n.generation.denied for n in nodes))
    for node in nodes:
        error = await refused(create_session(node.port, pki.device_tls("acme", "dev-bad")))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def _still_refused_and_listed_revoked(
    nodes: tuple[AudioServer, AudioServer], admin: Admin, pki: EphemeralPki
) -> None:
    for node in nodes:
        error = await refused(create_session(node.port, pki.device_tls("acme", "dev-bad")))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        async with admin(node, role="viewer") as viewer:
            got = await viewer.GetDevice(ref("dev-bad"))
            assert got.revoked and not got.online


async def test_a_revoked_device_stays_out_when_redis_restarts_empty_and_live_modes_survive(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    pki: EphemeralPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    await _revoked_and_refused_everywhere((a, b), connect, admin, pki)
    async with connect(a, "acme", "dev-live") as live:
        await held_by(a, live)
        await live.press(MODE)
        await live.press(MODE)
        await wait_for(lambda: mode_of(live.view.leds) == 2 and a.store.pending == 0)
        session = a.registry.controller(LIVE).session  # type: ignore[union-attr]
        assert session is not None

        redis_server.stop()
        redis_server.start()  # the same port, no persistence: every key is gone

        await wait_for(lambda: all(_resets(n) == 1 for n in (a, b)), timeout=RESTORED_S)
        await wait_for(lambda: not any(n.generation.resetting for n in (a, b) if n.generation), timeout=5)
        await _still_refused_and_listed_revoked((a, b), admin, pki)
        stored = await a.store.load(LIVE)
        assert stored is not None and stored.mode == 2 and stored.session_id == session.id
        async with admin(b, role="viewer") as viewer:
            listed = await viewer.ListDevices(apb.ListDevicesRequest())
            assert {(d.device_id, d.online, d.revoked, d.mode) for d in listed.devices} == {
                ("dev-bad", False, True, 0),
                ("dev-live", True, False, 2),
            }
            audit = await viewer.ListAuditEvents(apb.ListAuditEventsRequest(action=RESET_ACTION))
            assert audit.events and "audit history before this event was lost" in audit.events[0].message
            assert "1 revocation(s) restored" in audit.events[0].message
        assert (await live.press(MODE)).ack and not live.ends  # the live device never noticed
    detected = [r for r in caplog.records if r.getMessage() == "store.reset_detected"]
    assert detected and all(r.levelno == logging.ERROR for r in detected)


async def test_a_flushall_without_an_outage_is_caught_at_the_revoked_devices_next_attempt(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    pki: EphemeralPki,
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    await _revoked_and_refused_everywhere((a, b), connect, admin, pki)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.flushall()
        error = await refused(create_session(a.port, pki.device_tls("acme", "dev-bad")))  # at once
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        await wait_for(lambda: all(_resets(n) == 1 for n in (a, b)))
        await wait_for(lambda: not any(n.generation.resetting for n in (a, b) if n.generation))
        assert await client.get(GENERATION_KEY) == a.generation.generation == b.generation.generation  # type: ignore[union-attr]
    finally:
        await client.aclose()
    await _still_refused_and_listed_revoked((a, b), admin, pki)


async def test_a_node_starting_on_devices_without_a_marker_says_data_may_be_lost(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await server_factory(**shared(redis_server, "node-a"))
    async with connect(a, "acme", "dev-live"):
        pass
    # the device's streams gone on the server too before it stops (a gRPC stop racing streams the
    # peer is cancelling can hang: grpc/grpc#37239)
    await wait_for(lambda: len(a.registry) == 0)
    await a.stop(grace_s=0.5)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.delete(GENERATION_KEY)  # lost while no node ran (the devices' records were not)
    finally:
        await client.aclose()
    assert not [r for r in caplog.records if r.getMessage() == "store.generation_missing"]
    await server_factory(**shared(redis_server, "node-b"))
    missing = [r for r in caplog.records if r.getMessage() == "store.generation_missing"]
    assert len(missing) == 1 and missing[0].levelno == logging.ERROR
