"""Play -> first packet and Stop -> is_end latency, alone and with 200 devices streaming."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from auth.tls import TlsMaterial
from bench.harness import connect_all, now, percentiles
from bench.loadclient import MODE, PLAY, STOP, LoadDevice

ROUNDS = 40
PLAY_S = 0.25
IDLE_S = 0.1


async def measure(probe: LoadDevice, rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    await probe.press(MODE)  # mode 1: the 64 s sound, so Stop always interrupts
    plays, stops = [], []
    for _ in range(rounds):
        started = probe.expect("start")
        t0 = now()
        await probe.press(PLAY)
        plays.append(await asyncio.wait_for(started, 5) - t0)
        await asyncio.sleep(PLAY_S)
        ended = probe.expect("end")
        t0 = now()
        await probe.press(STOP)
        stops.append(await asyncio.wait_for(ended, 5) - t0)
        await asyncio.sleep(IDLE_S)
    return plays, stops


async def run(
    port: int, probe_tls: TlsMaterial, background: Sequence[TlsMaterial]
) -> dict[str, tuple[float, float]]:
    (probe,) = await connect_all(port, [probe_tls])
    loaders = await connect_all(port, background)
    for device in loaders:
        await device.press(MODE)
        await device.press(PLAY)
    await asyncio.sleep(1.0)
    try:
        plays, stops = await measure(probe)
    finally:
        for device in [probe, *loaders]:
            await device.stop()
    return {"play_to_first_packet": percentiles(plays), "stop_to_is_end": percentiles(stops)}
