"""Two servers (replicas) sharing one real Redis: device state follows the device, sessions are
decided by the shared store, and a replica that lost a device cannot overwrite what the new one wrote."""

from __future__ import annotations

import grpc
import pytest

from auth.identity import Identity
from server.app import AudioServer
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, EphemeralPki, mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_security import call_each_method

DEVICE = Identity("acme", "roamer")
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
async def replicas(
    server_factory: ServerFactory, redis_server: RedisServer
) -> tuple[AudioServer, AudioServer]:
    shared = {"state_backend": "redis", "redis_url": redis_server.url, "store_retry_s": 0.05}
    return await server_factory(**shared), await server_factory(**shared)


async def test_mode_follows_the_device_to_another_replica(
    replicas: tuple[AudioServer, AudioServer], connect: Connect
) -> None:
    a, b = replicas
    async with connect(a, "acme", "roamer") as on_a:
        await on_a.press(MODE)
        await on_a.press(MODE)
        await wait_for(lambda: mode_of(on_a.view.leds) == 2)
    await wait_for(lambda: a.store.pending == 0)
    async with connect(b, "acme", "roamer") as on_b:  # the load balancer sent it elsewhere
        await wait_for(lambda: mode_of(on_b.view.leds) == 2)
        await on_b.press(MODE)
        await wait_for(lambda: mode_of(on_b.view.leds) == 3)
    await wait_for(lambda: b.store.pending == 0)
    stored = await a.store.load(DEVICE)  # one truth, whichever replica asks
    assert stored is not None and stored.mode == 3 and stored.epoch == 2


async def test_sessions_are_decided_by_the_shared_store(
    replicas: tuple[AudioServer, AudioServer], connect: Connect, pki: EphemeralPki
) -> None:
    a, b = replicas
    async with connect(a, "acme", "roamer") as on_a:
        assert on_a.session is not None
        old_token = on_a.session.token
        await wait_for(lambda: on_a.status_requests >= 1)  # its streams are open on A
        async with connect(b, "acme", "roamer") as on_b:  # a newer session, claimed on B
            # A still holds the old session in memory, but asks the store: its token is refused there too.
            codes = await call_each_method(a.port, pki.device_tls("acme", "roamer"), old_token)
            assert codes == {"status": UNAUTH, "event": UNAUTH, "audio": UNAUTH}
            # A press on A's stale session changes A's memory, never the shared record.
            await on_a.press(MODE)
            await on_a.press(MODE)
            await on_b.press(MODE)
            await wait_for(lambda: mode_of(on_b.view.leds) == 1)
            await wait_for(lambda: a.store.pending == 0 and b.store.pending == 0)
            stored = await b.store.load(DEVICE)
            assert stored is not None and stored.mode == 1 and stored.session_id == on_b.session.session_id  # type: ignore[union-attr]


async def test_a_session_created_on_one_replica_opens_streams_on_another(
    replicas: tuple[AudioServer, AudioServer], connect: Connect, pki: EphemeralPki
) -> None:
    """The device's token came from B; its streams land on A, which still held it: A adopts B's session."""
    a, b = replicas
    async with connect(a, "acme", "roamer") as first:
        await wait_for(lambda: first.status_requests >= 1)
        await first.press(MODE)
        await wait_for(lambda: a.store.pending == 0)
        from tests.test_security import create_session

        from_b = await create_session(b.port, pki.device_tls("acme", "roamer"))
        codes = await call_each_method(a.port, pki.device_tls("acme", "roamer"), from_b.token)
        assert set(codes.values()) == {grpc.StatusCode.OK}
        await wait_for(lambda: len(first.ends) >= 3)  # A ended what it held of the device
        assert {end.code for end in first.ends.values()} == {grpc.StatusCode.ABORTED}
        controller = a.registry.controller(DEVICE)
        assert controller is None or controller.record.session_id == from_b.session_id
