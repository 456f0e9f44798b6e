"""Registry bookkeeping without a server: sessions, supersede order, the connected-devices gauge."""

from __future__ import annotations

from auth.identity import Identity
from server import metrics
from server.audio_library import AudioLibrary
from server.audio_player import FrameClock
from server.registry import DeviceRegistry
from server.store import MemoryStore

DEVICE = Identity("registry", "dev-1")


def gauge() -> float:
    return float(metrics.CONNECTED_DEVICES.labels(tenant=DEVICE.tenant)._value.get())


async def test_supersede_while_old_streams_linger_counts_the_device_once(library: AudioLibrary) -> None:
    registry = DeviceRegistry(MemoryStore(), library, 5, FrameClock(0.1))
    before = gauge()
    await registry.start_session(DEVICE, "a")
    old_controller, old = await registry.open_rpc(DEVICE, "a", 1)
    await registry.start_session(DEVICE, "b")  # closes session a; its stream has not detached yet
    assert old.closed
    controller, new = await registry.open_rpc(DEVICE, "b", 1)
    assert gauge() == before + 1
    await registry.close_rpc(old_controller, old)  # the old stream finally goes away
    assert gauge() == before + 1 and registry.controller(DEVICE) is controller
    await registry.close_rpc(controller, new)
    assert gauge() == before and len(registry) == 0
