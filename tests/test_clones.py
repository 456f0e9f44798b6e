"""Two devices sharing one certificate supersede each other: both sides say so plainly, devices back off."""

from __future__ import annotations

import asyncio
import logging

import pytest

from device.audio_sink import RecordingSink
from device.backoff import Backoff
from device.client import DeviceClient
from device.connection import ConnectionManager
from server.app import AudioServer
from server.registry import CLONE_SUPERSEDES
from tests.helpers import EphemeralPki, sample, wait_for


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
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    server_lines = [r for r in caplog.records if r.getMessage() == "session.possible_clone"]
    assert server_lines and server_lines[0].supersedes >= CLONE_SUPERSEDES  # type: ignore[attr-defined]
    # Being superseded never counts as a stable connection: the failures (and delays) keep growing.
    superseded = [a for m in managers for a in m.attempts if a.reason == "ABORTED"]
    assert superseded and all(a.connected_for_s == 0 for a in superseded)
    assert max(b.failures for b in backoffs) >= 2
