"""Two devices sharing one certificate supersede each other: both sides say so plainly, devices back off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from auth.identity import Identity
from comms.tasks import cancel_and_wait
from device.audio_sink import RecordingSink
from device.backoff import Backoff
from device.client import DeviceClient
from device.connection import ConnectionManager
from server.app import AudioServer
from server.devices.commands import Command
from server.devices.registry import CLONE_SUPERSEDES
from server.devices.state_machine import Button
from tests.helpers import EphemeralPki, sample, wait_for

CLONE_RETRY_S = 3600.0


async def test_clones_are_named_on_both_sides_and_back_off(
    server: AudioServer, pki: EphemeralPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = sample("audio_possible_clones_total")
    target = f"127.0.0.1:{server.port}"
    backoffs = [Backoff(base_s=0.05, cap_s=1.0, stable_after_s=0.2) for _ in range(2)]
    managers = [
        ConnectionManager(
            make_client=lambda: DeviceClient(target, pki.device_tls("acme", "cloned"), RecordingSink()),
            backoff=backoff,
            on_state=lambda state, client: None,
        )
        for backoff in backoffs
    ]
    tasks = [asyncio.create_task(manager.run()) for manager in managers]
    try:
        await wait_for(lambda: sample("audio_possible_clones_total") > before, timeout=20)
        await wait_for(
            lambda: any(r.getMessage() == "device.possible_clone" for r in caplog.records), timeout=20
        )
    finally:
        await cancel_and_wait(*tasks)
    server_lines = [r for r in caplog.records if r.getMessage() == "session.possible_clone"]
    assert server_lines and server_lines[0].supersedes >= CLONE_SUPERSEDES  # type: ignore[attr-defined]
    # Being superseded never counts as a stable connection: the failures (and delays) keep growing.
    superseded = [a for m in managers for a in m.attempts if a.reason == "ABORTED"]
    assert superseded and all(a.connected_for_s == 0 for a in superseded)
    assert max(b.failures for b in backoffs) >= 2


async def test_two_devices_with_one_certificate_settle_with_one_of_them_playing(
    server: AudioServer, pki: EphemeralPki
) -> None:
    """After the clone warning the losing device stops taking the session over (it waits for an
    operator, ``clone_retry_s``); the other keeps its session and plays."""
    target, tls = f"127.0.0.1:{server.port}", pki.device_tls("acme", "clone-pair")
    sinks = [RecordingSink(), RecordingSink()]
    told_clone = [asyncio.Event(), asyncio.Event()]

    def parking_sleep(index: int) -> Callable[[float], Awaitable[None]]:
        async def sleep(delay: float) -> None:
            if delay >= CLONE_RETRY_S:
                told_clone[index].set()
                await asyncio.Event().wait()  # the long wait: parked until the test ends
            await asyncio.sleep(delay)

        return sleep

    def client_for(sink: RecordingSink) -> Callable[[], DeviceClient]:
        return lambda: DeviceClient(target, tls, sink)

    managers = [
        ConnectionManager(
            make_client=client_for(sinks[i]),
            backoff=Backoff(base_s=0.05, cap_s=1.0, stable_after_s=0.2),
            on_state=lambda state, client: None,
            clone_retry_s=CLONE_RETRY_S,
            sleep=parking_sleep(i),
        )
        for i in range(2)
    ]
    tasks = [asyncio.create_task(manager.run()) for manager in managers]
    try:
        waiters = [asyncio.create_task(e.wait()) for e in told_clone]
        async with asyncio.timeout(60):  # "settle within one minute"
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        loser = 0 if told_clone[0].is_set() else 1
        winner = 1 - loser
        await wait_for(
            lambda: managers[winner].client is not None and len(server.registry.live_sessions()) == 1,
            timeout=20,
        )
        assert managers[loser].client is None and not told_clone[winner].is_set()
        assert await server.registry.apply(Identity("acme", "clone-pair"), Command.press(Button.PLAY))
        await wait_for(lambda: bool(sinks[winner].sounds), timeout=10)  # the one left plays
        assert not sinks[loser].sounds
    finally:
        await cancel_and_wait(*tasks)
