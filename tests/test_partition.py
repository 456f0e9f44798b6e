"""Network outages through a loopback fault proxy: audio stays at the live edge, late presses do not
apply, dead peers are noticed in seconds on both sides.

These tests take real time (a 20 s partition, ~10 s keepalive detection); they are marked slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from auth.identity import Identity
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from device.playback import JitterPlayer, PacedOutput
from server.app import AudioServer
from tests.conftest import ServerFactory
from tests.fault_proxy import FaultProxy
from tests.helpers import MODE, PLAY, EphemeralPki, mode_of, sample, skipped_packets, wait_for

pytestmark = pytest.mark.slow

PARTITION_S = 20.0
LONG = 120_000  # keepalive (ms) longer than the partition: the live-edge rules must work by themselves


@pytest.fixture
async def proxy_for() -> AsyncIterator[list[FaultProxy]]:
    proxies: list[FaultProxy] = []
    yield proxies
    for proxy in proxies:
        await proxy.close()


async def test_a_20s_partition_resumes_at_the_live_edge_and_drops_the_late_press(
    server_factory: ServerFactory, pki: EphemeralPki, proxy_for: list[FaultProxy]
) -> None:
    app = await server_factory(
        keepalive_time_s=120,
        keepalive_timeout_s=60,
        status_poll_interval_s=0.5,
        link_stall_s=1.0,
        audio_write_timeout_s=60,
    )
    proxy = await FaultProxy(app.port).start()
    proxy_for.append(proxy)
    player = JitterPlayer(jitter_frames=3, max_behind_frames=15)
    sink = RecordingSink()
    output = PacedOutput(player, sink)
    client = DeviceClient(
        proxy.address, pki.device_tls("acme", "partitioned"), sink, audio=player, keepalive_ms=(LONG, LONG)
    )
    output.start()
    await client.connect()
    try:
        await client.press(MODE)  # mode 1: the 64 s sound
        await client.press(PLAY)
        await wait_for(lambda: client.packets_received > 50)
        controller = app.registry.controller(Identity("acme", "partitioned"))
        assert controller is not None and controller.state.mode == 1
        skipped_before = skipped_packets()
        stale_before = sample("audio_events_stale_total", reason="stalled")

        proxy.hold()
        held_at = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.press(MODE, timeout=1.0)  # the device gives up on this press
        await asyncio.sleep(PARTITION_S - (time.monotonic() - held_at))
        received_before_heal = client.packets_received
        proxy.heal()

        # The late press reached the server and was judged stale: counted, not applied.
        await wait_for(
            lambda: sample("audio_events_stale_total", reason="stalled") == stale_before + 1, timeout=5
        )
        assert controller.state.mode == 1
        # The server skipped what went stale instead of delivering 20 s of old audio.
        await wait_for(lambda: client.packets_received > received_before_heal + 100, timeout=5)
        skipped = skipped_packets() - skipped_before
        assert skipped > 0.5 * PARTITION_S * 50, skipped
        # The device plays within its bound of real time.
        assert len(player._queue) <= player.max_frames
        await asyncio.sleep(1.0)  # a second of live audio after the burst
        behind_ms = len(player._queue) * 20
        assert behind_ms <= player.max_frames * 20
        print(f"\npartition {PARTITION_S:.0f} s: server skipped {skipped:.0f} packets; device dropped "
              f"{player.dropped_frames} frames; {behind_ms} ms queued 1 s after the heal")  # fmt: skip
        assert set(client.ends) == {"event"}  # only the stream whose ack timed out was given up
    finally:
        await client.close()
        await output.close()
    async with DeviceClient(proxy.address, pki.device_tls("acme", "partitioned"), RecordingSink()) as again:
        await wait_for(lambda: mode_of(again.view.leds) == 1)  # reconnected as the device would: mode kept
        await again.press(MODE)
        await wait_for(lambda: mode_of(again.view.leds) == 2)


async def test_dead_peers_are_noticed_on_both_sides_within_seconds(
    server: AudioServer, pki: EphemeralPki, proxy_for: list[FaultProxy]
) -> None:
    """Default keepalive (5 s + 5 s on both ends): an idle device behind a blackhole is dropped by the
    server and notices the loss itself, without waiting for the old 30 s+ keepalive."""
    proxy = await FaultProxy(server.port).start()
    proxy_for.append(proxy)
    client = DeviceClient(proxy.address, pki.device_tls("acme", "blackholed"), RecordingSink())
    await client.connect()
    try:
        await wait_for(lambda: client.status_requests >= 1)
        proxy.hold()
        started = time.monotonic()
        server_seen = device_seen = None
        while server_seen is None or device_seen is None:
            await asyncio.sleep(0.1)
            now = time.monotonic() - started
            if server_seen is None and server.registry.controller(Identity("acme", "blackholed")) is None:
                server_seen = now
            if device_seen is None and client.ends:
                device_seen = now
            assert now < 30, (
                f"a dead peer went unnoticed for 30 s (server {server_seen}, device {device_seen})"
            )
        print(f"\ndead peer noticed: server {server_seen:.1f} s, device {device_seen:.1f} s")
    finally:
        await client.close()


async def test_a_link_stalled_past_the_bound_ends_the_session(
    server_factory: ServerFactory, pki: EphemeralPki, proxy_for: list[FaultProxy]
) -> None:
    """Keepalive off the table (long): the stalled status heartbeat alone ends the session in time."""
    app = await server_factory(
        keepalive_time_s=120, keepalive_timeout_s=60, status_poll_interval_s=0.2, link_stall_s=0.5,
        audio_write_timeout_s=2.0,
    )  # fmt: skip
    proxy = await FaultProxy(app.port).start()
    proxy_for.append(proxy)
    client = DeviceClient(
        proxy.address, pki.device_tls("acme", "stuck"), RecordingSink(), keepalive_ms=(LONG, LONG)
    )
    await client.connect()
    try:
        await client.press(MODE)
        await client.press(PLAY)
        await wait_for(lambda: client.packets_received > 10)
        ended_before = sample("audio_sessions_ended_total", reason="stalled")
        proxy.hold()
        await wait_for(lambda: app.registry.controller(Identity("acme", "stuck")) is None, timeout=15)
        assert sample("audio_sessions_ended_total", reason="stalled") == ended_before + 1
    finally:
        proxy.heal()
        await client.close()
