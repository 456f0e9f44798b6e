"""Registry bookkeeping without a server: sessions, supersede order, the connected-devices gauge."""

from __future__ import annotations

import random

import grpc
import pytest

from auth.identity import Identity
from server.audio.library import AudioLibrary
from server.audio.player import FrameClock
from server.devices.registry import DeviceRegistry
from server.devices.state_machine import ConnectionLost, Event
from server.state.guard import StoreGuard
from server.state.memory_store import MemoryStore
from tests.helpers import connected, sample

DEVICE = Identity("registry", "dev-1")


def gauge() -> float:
    return connected(DEVICE.tenant)


def new_registry(library: AudioLibrary) -> DeviceRegistry:
    return DeviceRegistry(StoreGuard(MemoryStore()), library, 5, FrameClock(0.1))


async def test_supersede_while_old_streams_linger_counts_the_device_once(library: AudioLibrary) -> None:
    registry = new_registry(library)
    assert gauge() == 0
    await registry.start_session(DEVICE, "a")
    old_controller, old = await registry.open_rpc(DEVICE, "a", 1, "status")
    await registry.start_session(DEVICE, "b")  # closes session a; its stream has not detached yet
    assert old.closed
    controller, new = await registry.open_rpc(DEVICE, "b", 1, "status")
    assert gauge() == 1
    await registry.close_rpc(old_controller, old, "status")  # the old stream finally goes away
    assert gauge() == 1 and registry.controller(DEVICE) is controller
    await registry.close_rpc(controller, new, "status")
    assert gauge() == 0 and len(registry) == 0


async def test_gauges_cannot_drift_when_two_clones_supersede_each_other(library: AudioLibrary) -> None:
    """Two devices with one identity take turns for a while, streams detaching in any order, then quit."""
    registry = new_registry(library)
    rng = random.Random(7)
    attached = []
    for turn in range(30):
        session_id = f"s{turn}"
        await registry.start_session(DEVICE, session_id)
        for kind in ("status", "event", "audio"):
            attached.append((*(await registry.open_rpc(DEVICE, session_id, 1, kind)), kind))
        rng.shuffle(attached)
        for _ in range(rng.randrange(len(attached))):  # some older streams detach late, some never yet
            await registry.close_rpc(*attached.pop())
        assert gauge() <= 1
    for item in attached:
        await registry.close_rpc(*item)
    assert gauge() == 0 and len(registry) == 0 and registry.locks_held() == 0
    assert sample("audio_open_streams", kind="status") == 0


async def test_a_failing_fade_out_still_ends_the_session(
    library: AudioLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection-lost step raising (a bug in the fade-out path) must not leave a session that
    can never end: it closes anyway, and its last stream detaching evicts the device."""
    registry = new_registry(library)
    await registry.start_session(DEVICE, "a")
    controller, session = await registry.open_rpc(DEVICE, "a", 1, "status")
    real_handle = controller.handle

    async def failing_handle(event: Event) -> None:
        if isinstance(event, ConnectionLost):
            raise RuntimeError("injected fade-out failure")
        await real_handle(event)

    monkeypatch.setattr(controller, "handle", failing_handle)
    assert await registry.end_session(DEVICE, grpc.StatusCode.UNAVAILABLE, "bye", "operator")
    assert session.closed and session.close_code == grpc.StatusCode.UNAVAILABLE
    await registry.close_rpc(controller, session, "status")
    assert len(registry) == 0 and registry.locks_held() == 0
