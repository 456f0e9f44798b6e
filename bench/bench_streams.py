"""Concurrent real-time streams: N devices over mTLS each playing the long sound.

The devices live in this process (the load generator, pinned by run_all to the generator
cores); the server in its own, pinned to the server cores. Three windows per device count:
the server's CPU per delivered packet (median and range) against the raw grpc.aio floor, and
this process's own CPU, so a shortfall the generator caused is marked as such.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from auth.tls import TlsMaterial
from bench.figures import REPEATS, Spread, generator_bound, spread
from bench.harness import ServerProcess, connect_all, now
from bench.loadclient import MODE, PLAY
from bench.procs import cpu_seconds

WINDOW_S = 5.0
WARMUP_S = 1.5


@dataclass
class StreamWindow:
    seconds: float
    server_cpu_s: float
    generator_cpu_s: float
    packets: int
    server_late: int
    client_late: int
    dropped: int

    @property
    def us_per_packet(self) -> float:
        return self.server_cpu_s * 1e6 / self.packets if self.packets else float("nan")


@dataclass
class StreamResult:
    devices: int
    windows: list[StreamWindow]
    generator_cores: int

    def _each(self, value: Callable[[StreamWindow], float]) -> Spread:
        return spread([value(w) for w in self.windows])

    @property
    def us(self) -> Spread:
        return self._each(lambda w: w.us_per_packet)

    @property
    def packet_rate(self) -> float:
        return self._each(lambda w: w.packets / w.seconds).median

    @property
    def server_cpu_pct(self) -> float:
        return self._each(lambda w: 100 * w.server_cpu_s / w.seconds).median

    @property
    def generator_cpu_pct(self) -> float:
        return self._each(lambda w: 100 * w.generator_cpu_s / w.seconds).median

    @property
    def generator_bound(self) -> bool:
        return generator_bound(self.generator_cpu_pct, self.generator_cores, 1)  # one process

    @property
    def expected_rate(self) -> float:
        return self.devices * 50.0

    @property
    def achieved_pct(self) -> float:
        return 100 * self.packet_rate / self.expected_rate

    @property
    def client_late_pct(self) -> float:
        """Share of the packets more than a frame late at the devices (their own schedule)."""
        packets = self.total("packets")
        return 100 * self.total("client_late") / packets if packets else 0.0

    def total(self, name: str) -> int:
        return sum(int(getattr(w, name)) for w in self.windows)


async def run(
    server: ServerProcess, creds: Sequence[TlsMaterial], generator_cores: int = 1, windows: int = REPEATS
) -> StreamResult:
    devices = await connect_all(server.port, creds)
    me = os.getpid()
    found: list[StreamWindow] = []
    try:
        await asyncio.gather(*(d.press(MODE) for d in devices))
        await asyncio.gather(*(d.press(PLAY) for d in devices))
        await asyncio.sleep(WARMUP_S)

        def mark() -> tuple[float, dict[str, float], float, int, int]:
            late = sum(s.late for d in devices for s in d.sounds)
            return now(), server.sample(), cpu_seconds(me), sum(d.packets for d in devices), late

        marks = [mark()]
        for _ in range(windows):
            await asyncio.sleep(WINDOW_S)
            marks.append(mark())
        for (t0, s0, g0, p0, l0), (t1, s1, g1, p1, l1) in itertools.pairwise(marks):
            found.append(
                StreamWindow(
                    seconds=t1 - t0,
                    server_cpu_s=s1["cpu_s"] - s0["cpu_s"],
                    generator_cpu_s=g1 - g0,
                    packets=p1 - p0,
                    server_late=int(s1["late_packets"] - s0["late_packets"]),
                    client_late=l1 - l0,
                    dropped=int(s1["dropped_packets"] - s0["dropped_packets"]),
                )
            )
    finally:
        for device in devices:
            await device.stop()
    return StreamResult(len(devices), found, generator_cores)
