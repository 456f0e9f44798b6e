"""Concurrent real-time streams: N devices over mTLS each playing the long sound."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from auth.tls import TlsMaterial
from bench.harness import ServerProcess, connect_all, now
from bench.loadclient import MODE, PLAY

WINDOW_S = 10.0
WARMUP_S = 1.5


@dataclass
class StreamResult:
    devices: int
    server_cpu_pct: float
    packet_rate: float
    expected_rate: float
    server_late: int
    client_late: int
    dropped: int

    @property
    def achieved_pct(self) -> float:
        return 100 * self.packet_rate / self.expected_rate


async def run(server: ServerProcess, creds: Sequence[TlsMaterial]) -> StreamResult:
    devices = await connect_all(server.port, creds)
    try:
        await asyncio.gather(*(d.press(MODE) for d in devices))
        await asyncio.gather(*(d.press(PLAY) for d in devices))
        await asyncio.sleep(WARMUP_S)
        before, packets_before, late_before = (
            server.sample(),
            sum(d.packets for d in devices),
            [sum(s.late for s in d.sounds) for d in devices],
        )
        t0 = now()
        await asyncio.sleep(WINDOW_S)
        elapsed = now() - t0
        after, packets_after = server.sample(), sum(d.packets for d in devices)
        client_late = sum(sum(s.late for s in d.sounds) for d in devices) - sum(late_before)
    finally:
        for device in devices:
            await device.stop()
    return StreamResult(
        devices=len(devices),
        server_cpu_pct=100 * (after["cpu_s"] - before["cpu_s"]) / elapsed,
        packet_rate=(packets_after - packets_before) / elapsed,
        expected_rate=len(devices) * 50.0,
        server_late=int(after["late_packets"] - before["late_packets"]),
        client_late=client_late,
        dropped=int(after["dropped_packets"] - before["dropped_packets"]),
    )
